"""The paper's recurrent-cell space (section 3.4, Figure 5) and the language model built from its cells."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from nas_env.children import RNNLanguageModel, SearchedCell, count_params
from nas_env.spaces import InvalidTokenError, RNNCellArchitecture, RNNCellSpace, space_from_config
from nas_env.spaces.rnn_cell import ACTIVATIONS, COMBINES, paper_example, tree_children, tree_parents

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEAVES = (2, 4, 8)

# the tree written out by hand: internal node -> (left, right)
HAND_TREES = {
    2: {2: (0, 1)},
    4: {4: (0, 1), 5: (2, 3), 6: (4, 5)},
    8: {8: (0, 1), 9: (2, 3), 10: (4, 5), 11: (6, 7), 12: (8, 9), 13: (10, 11), 14: (12, 13)},
}


# ---------------------------------------------------------------------------------------------- the space
@pytest.mark.parametrize("num_leaves", LEAVES)
def test_tree_numbering(num_leaves: int) -> None:
    children = tree_children(num_leaves)
    assert len(children) == 2 * num_leaves - 1
    assert children[:num_leaves] == (None,) * num_leaves
    assert {k: pair for k, pair in enumerate(children) if pair is not None} == HAND_TREES[num_leaves]
    parents = tree_parents(num_leaves)
    assert parents[-1] is None and all(p is not None for p in parents[:-1])


@pytest.mark.parametrize("num_leaves", LEAVES)
def test_token_order_and_choices(num_leaves: int) -> None:
    space = RNNCellSpace(num_leaves)
    n = 2 * num_leaves - 1
    assert space.num_steps == 2 * n + 4
    names = [d.name for d in space.decisions]
    expected = [f"node{k}.{f}" for k in range(n) for f in ("combine", "activation")]
    expected += ["inject.combine", "inject.activation", "cell_from", "inject_into"]
    assert names == expected
    for d in space.decisions:
        assert d.layer is None and d.source is None and d.kind != "anchor"
        assert d.choices == {"combine": COMBINES, "activation": ACTIVATIONS, "cell_index": tuple(range(n))}[d.kind]
    assert space.max_choices == max(4, n)
    for step, d in enumerate(space.decisions):
        assert space.action_mask(step).sum() == d.num_choices
    assert space.num_architectures == 8 ** (n + 1) * n**2


def test_paper_scale_and_controller_kinds() -> None:
    from agents.reinforce import softmax_kinds

    space = RNNCellSpace()
    assert space.num_leaves == 8 and space.num_steps == 34
    assert space.num_architectures == 63_331_869_759_897_600  # ~6.3e16, the paper's "6 x 10^16"
    assert softmax_kinds(space) == {"combine": 2, "activation": 4, "cell_index": 15}


@pytest.mark.parametrize("num_leaves", LEAVES)
def test_decode_encode_and_json_round_trip(num_leaves: int) -> None:
    space = RNNCellSpace(num_leaves)
    rng = np.random.default_rng(num_leaves)
    for _ in range(200):
        tokens = space.sample_tokens(rng)
        arch = space.decode(tokens)
        assert space.encode(arch) == tokens
        assert arch.num_leaves == num_leaves and arch.num_nodes == 2 * num_leaves - 1
        again = space.architecture_from_json(arch.to_json())
        assert again == arch and hash(again) == hash(arch)
        assert RNNCellArchitecture.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        assert space.key(again) == space.key(arch)


def test_decode_gives_the_paper_example() -> None:
    space = RNNCellSpace(2)
    # node0 add/tanh, node1 elem_mult/relu, node2 elem_mult/sigmoid, inject add/relu, cell_from 1, inject_into 0
    arch = space.decode([0, 1, 1, 3, 1, 2, 0, 3, 1, 0])
    assert arch == paper_example()
    assert arch.formula() == "h_t = sigmoid(relu(tanh(x + h) + c) * relu(x * h)); c_t = x * h"
    assert "inject add/relu into 0" in str(arch) and "c_t from 1" in str(arch)


def test_bad_tokens_name_the_position() -> None:
    space = RNNCellSpace(4)
    tokens = list(space.sample_tokens(np.random.default_rng(0)))
    for name, bad_value in (("node3.activation", 4), ("inject.combine", 2), ("inject_into", 7), ("cell_from", -1)):
        bad = list(tokens)
        step = [d.name for d in space.decisions].index(name)
        bad[step] = bad_value
        with pytest.raises(InvalidTokenError, match=rf"token {bad_value} at step {step} \({name}\)"):
            space.decode(bad)
    with pytest.raises(InvalidTokenError, match=f"expected {space.num_steps} tokens"):
        space.decode(tokens[:-1])
    with pytest.raises(InvalidTokenError, match="4-leaf"):
        space.encode(RNNCellSpace(2).sample(0))


def test_bad_space_and_architecture() -> None:
    for bad in (0, 1, 3, 6, 2.0, True):
        with pytest.raises(ValueError, match="num_leaves"):
            RNNCellSpace(bad)  # type: ignore[arg-type]
    good = paper_example().to_dict()
    cases = {
        "nodes must have": {"nodes": good["nodes"][:2]},
        r"nodes\[1\]: unknown combine 'sub'": {"nodes": [good["nodes"][0], ["sub", "relu"], good["nodes"][2]]},
        r"nodes\[2\]: unknown activation 'gelu'": {"nodes": [*good["nodes"][:2], ["add", "gelu"]]},
        "inject must be a": {"inject": ["add"]},
        "inject: unknown activation": {"inject": ["add", "softmax"]},
        r"cell_from must be a node index in 0..2": {"cell_from": 3},
        "inject_into must be": {"inject_into": -1},
    }
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            RNNCellArchitecture.from_dict({**good, **change})
    with pytest.raises(ValueError, match="needs"):
        RNNCellArchitecture.from_dict({"nodes": good["nodes"]})


def test_sampling_is_seeded_and_mutation_changes_one_decision() -> None:
    space = RNNCellSpace(8)
    assert space.sample(7) == space.sample(7)
    assert len({space.key(space.sample(s)) for s in range(50)}) == 50
    rng = np.random.default_rng(3)
    for _ in range(200):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        diff = np.asarray(space.encode(arch)) != np.asarray(space.encode(child))
        assert diff.sum() == 1


def test_space_config_round_trip() -> None:
    space = space_from_config({"name": "rnn_cell", "num_leaves": 4})
    assert isinstance(space, RNNCellSpace) and space.num_leaves == 4
    again = space_from_config({"name": space.name, **space.config()})
    assert again.decisions == space.decisions
    a = space.sample(0)
    assert again.key(again.decode(space.encode(a))) == space.key(a)
    assert space_from_config({"name": "rnn_cell"}).num_leaves == 8


# ---------------------------------------------------------------------------------------------- the cell
def leaf_weights(cell: SearchedCell, i: int) -> tuple[torch.Tensor, ...]:
    """Leaf ``i``'s own W_i, U_i and biases, sliced from the stacked parameters."""
    rows = slice(i * cell.hidden_size, (i + 1) * cell.hidden_size)
    return cell.weight_ih[rows], cell.weight_hh[rows], cell.bias_ih[rows], cell.bias_hh[rows]


def test_the_paper_example_by_hand() -> None:
    torch.manual_seed(0)
    cell = SearchedCell(paper_example(), input_size=3, hidden_size=4).double()
    x, h, c = (torch.randn(5, k, dtype=torch.float64) for k in (3, 4, 4))
    with torch.no_grad():
        W1, W2, b1, b2 = leaf_weights(cell, 0)
        W3, W4, b3, b4 = leaf_weights(cell, 1)
        a0 = torch.tanh((x @ W1.T + b1) + (h @ W2.T + b2))
        a1 = torch.relu((x @ W3.T + b3) * (h @ W4.T + b4))
        a0_new = torch.relu(a0 + c)  # inject add/relu into node 0
        a2 = torch.sigmoid(a0_new * a1)
        expected_h, expected_c = a2, (x @ W3.T + b3) * (h @ W4.T + b4)
        h_t, (h_state, c_t) = cell(x, (h, c))
    torch.testing.assert_close(h_t, expected_h)
    assert h_state is h_t
    torch.testing.assert_close(c_t, expected_c)
    bound = 1 / 2  # 1/sqrt(hidden_size)
    assert all(p.abs().max() <= bound for p in cell.parameters())
    assert cell.weight_ih.shape == (8, 3) and cell.weight_hh.shape == (8, 4)


_ACT = {"identity": lambda t: t, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}
_COMB = {"add": lambda a, b: a + b, "elem_mult": lambda a, b: a * b}


def reference_step(cell: SearchedCell, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The cell written from the definition: one matmul per leaf, the hand-written tree, recursion from the root."""
    arch = cell.arch
    tree = HAND_TREES[arch.num_leaves]
    pre: dict[int, torch.Tensor] = {}

    def value(k: int) -> torch.Tensor:
        combine, activation = arch.nodes[k]
        if k in tree:
            pre[k] = _COMB[combine](value(tree[k][0]), value(tree[k][1]))
        else:
            W, U, b, d = leaf_weights(cell, k)
            pre[k] = _COMB[combine](x @ W.T + b, h @ U.T + d)
        a = _ACT[activation](pre[k])
        if k == arch.inject_into:
            a = _ACT[arch.inject[1]](_COMB[arch.inject[0]](a, c))
        return a

    h_t = value(arch.root)
    return h_t, pre[arch.cell_from]


@pytest.mark.parametrize("num_leaves", LEAVES)
def test_random_cells_match_the_definition(num_leaves: int) -> None:
    space = RNNCellSpace(num_leaves)
    rng = np.random.default_rng(10 + num_leaves)
    torch.manual_seed(num_leaves)
    for _ in range(20):
        cell = SearchedCell(space.sample(rng), input_size=3, hidden_size=5).double()
        x, h, c = (0.5 * torch.randn(2, k, dtype=torch.float64) for k in (3, 5, 5))
        with torch.no_grad():
            h_t, (_, c_t) = cell(x, (h, c))
            ref_h, ref_c = reference_step(cell, x, h, c)
        torch.testing.assert_close(h_t, ref_h)
        torch.testing.assert_close(c_t, ref_c)


@pytest.mark.parametrize("num_leaves", LEAVES)
def test_random_cells_build_and_run_forward_backward(num_leaves: int) -> None:
    space = RNNCellSpace(num_leaves)
    rng = np.random.default_rng(num_leaves)
    torch.manual_seed(0)
    batch, steps, input_size, hidden = 3, 3, 4, 6
    for _ in range(50):
        arch = space.sample(rng)
        cell = SearchedCell(arch, input_size, hidden)
        state = cell.init_state(batch)
        outs = []
        for _ in range(steps):
            h_t, state = cell(0.1 * torch.randn(batch, input_size), state)
            outs.append(h_t)
        assert h_t.shape == state[0].shape == state[1].shape == (batch, hidden)
        loss = torch.stack(outs).pow(2).mean() + state[1].pow(2).mean()
        assert torch.isfinite(loss), str(arch)
        loss.backward()
        for name, p in cell.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, str(arch))


def test_state_matters() -> None:
    torch.manual_seed(0)
    cell = SearchedCell(paper_example(), input_size=3, hidden_size=4)
    x = torch.randn(2, 3)
    h0, c0 = cell.init_state(2)
    assert (h0 == 0).all() and (c0 == 0).all()
    h1, state1 = cell(x, (h0, c0))
    torch.testing.assert_close(cell(x)[0], h1)  # state=None means zeros
    h2, _ = cell(x, state1)
    assert not torch.allclose(h1, h2)
    h_only_c, _ = cell(x, (h0, torch.full_like(c0, 0.7)))  # c_{t-1} alone changes h_t (through the inject)
    assert not torch.allclose(h1, h_only_c)
    with pytest.raises(ValueError, match="x must be"):
        cell(torch.randn(2, 5), state1)


# ---------------------------------------------------------------------------------------------- the LM
def test_language_model_shapes_tying_and_truncated_bptt() -> None:
    torch.manual_seed(0)
    arch = RNNCellSpace(4).sample(1)
    vocab, size = 30, 8
    lm = RNNLanguageModel(arch, vocab, embed_size=size, hidden_size=size, dropout=0.2)
    assert lm.decoder.weight is lm.embedding.weight
    assert count_params(lm) == vocab * size + vocab + 4 * size * (size + size + 2)  # embedding counted once
    tokens = torch.randint(vocab, (5, 3))
    logits, state = lm(tokens)
    assert logits.shape == (5, 3, vocab) and state[0].shape == state[1].shape == (3, size)
    assert torch.isfinite(logits).all()

    lm.eval()
    fresh, _ = lm(tokens)
    carried, _ = lm(tokens, state)
    assert not torch.allclose(fresh, carried)  # the state carried between calls matters

    lm.train()  # truncated BPTT: detach between segments, backward through the second only
    state = tuple(s.detach() for s in state)
    logits, state = lm(tokens, state)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens.reshape(-1))
    loss.backward()
    assert lm.embedding.weight.grad is not None and torch.isfinite(lm.embedding.weight.grad).all()
    assert lm.cell.weight_hh.grad is not None

    restored = pickle.loads(pickle.dumps(lm))
    assert restored.decoder.weight is restored.embedding.weight


def test_language_model_untied_and_errors() -> None:
    arch = paper_example()
    lm = RNNLanguageModel(arch, 11, embed_size=4, hidden_size=6, tie_weights=False)
    assert lm.decoder.weight is not lm.embedding.weight and lm.decoder.weight.shape == (11, 6)
    assert lm(torch.randint(11, (2, 3)))[0].shape == (2, 3, 11)
    with pytest.raises(ValueError, match="tie_weights needs embed_size == hidden_size"):
        RNNLanguageModel(arch, 11, embed_size=4, hidden_size=6)
    with pytest.raises(ValueError, match="tokens must be"):
        lm(torch.randint(11, (6,)))


def test_adaptive_softmax_is_a_distribution_over_words_in_id_order() -> None:
    torch.manual_seed(0)
    vocab, size = 40, 16
    word_rank = torch.randperm(vocab)  # id -> frequency rank: the adaptive softmax's head holds ranks 0..9
    lm = RNNLanguageModel(paper_example(), vocab, embed_size=size, hidden_size=size, tie_weights=False,
                          adaptive_softmax_cutoffs=(10, 25), word_rank=word_rank).eval()  # fmt: skip
    tokens, targets = torch.randint(vocab, (5, 3)), torch.randint(vocab, (5, 3))
    log_p, state = lm(tokens)
    assert log_p.shape == (5, 3, vocab) and state[0].shape == (3, size)
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(5, 3), atol=1e-5)  # every word scored, once
    loss, _ = lm.next_word_loss(tokens, targets)
    by_id = -log_p.gather(-1, targets.unsqueeze(-1)).mean()  # the loss reads each target through its rank
    assert loss.item() == pytest.approx(by_id.item(), rel=1e-5)
    head_only = lm.decoder.head.weight.shape[0]
    assert head_only == 10 + 2  # 10 frequent words and one entry per tail cluster
    with pytest.raises(ValueError, match="no weight to tie"):
        RNNLanguageModel(paper_example(), vocab, size, size, adaptive_softmax_cutoffs=(10,))
    with pytest.raises(ValueError, match="word_rank must be a permutation"):
        RNNLanguageModel(paper_example(), vocab, size, size, tie_weights=False, adaptive_softmax_cutoffs=(10,),
                         word_rank=torch.zeros(vocab, dtype=torch.long))  # fmt: skip
    with pytest.raises(ValueError, match="2 adaptive softmax clusters need hidden_size >= 16, got 8"):
        RNNLanguageModel(paper_example(), vocab, 8, 8, tie_weights=False, adaptive_softmax_cutoffs=(10, 25))
