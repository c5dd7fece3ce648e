"""Build a recurrent cell and a word-level language model from an
:class:`~nas_env.spaces.rnn_cell.RNNCellArchitecture` (Zoph & Le 2017, section 3.4, Figure 5).

One step of the cell, for nodes ``k = 0..N-1`` in order (leaves first, the root last):

- leaf ``i``: ``pre_i = comb_i(W_i x_t + b_i, U_i h_{t-1} + d_i)``; internal node ``k`` with children
  ``(l, r)``: ``pre_k = comb_k(a_l, a_r)``; then ``a_k = act_k(pre_k)``;
- if ``k == inject_into``: ``a_k <- act_inj(comb_inj(a_k, c_{t-1}))`` (its parent uses the new value);
- ``h_t = a_root`` and ``c_t = pre_{cell_from}`` (before the activation; the injected value is not used).

The paper's example (two leaves): ``a0 = tanh(W1 x + W2 h)``, ``a1 = relu((W3 x) * (W4 h))``, inject
add/relu into node 0: ``a0 <- relu(a0 + c_{t-1})``, ``h_t = sigmoid(a0 * a1)``, ``c_t = (W3 x) * (W4 h)``.

All leaves' ``W_i x`` come from one matmul with the stacked ``(L*H, input)`` matrix ``weight_ih`` (for a
whole sequence at once in :class:`RNNLanguageModel`), and all ``U_i h`` from one with ``weight_hh``
(``(L*H, H)``); leaf ``i`` owns rows ``i*H:(i+1)*H``. ``benchmarks/bench_rnn_cell.py`` measures this
against a Linear pair per leaf. Each
leaf has two biases (``bias_ih``, ``bias_hh``), like ``torch.nn.LSTM``, so that ``elem_mult`` leaves are
affine in each factor. Every parameter starts uniform in ``[-1/sqrt(H), 1/sqrt(H)]``, as in torch's LSTM.

Cells with ``relu``/``identity``/``elem_mult`` are unbounded and can overflow for large inputs or long
unrolls; nothing here clips them (training code may clip gradients or reject such children).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.spaces.rnn_cell import RNNCellArchitecture, tree_children

__all__ = ["RNNLanguageModel", "SearchedCell"]

State = tuple[torch.Tensor, torch.Tensor]
#: each adaptive-softmax cluster projects to hidden_size / ADAPTIVE_DIV^(i + 1) dimensions (torch's div_value)
ADAPTIVE_DIV = 4


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


# named functions (no lambdas), so that a whole model can be pickled
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": _identity,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
}
_COMBINES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "elem_mult": torch.mul,
}


class SearchedCell(nn.Module):
    """One step of the searched recurrent cell: ``forward(x_t, (h, c)) -> (h_t, (h_t, c_t))``."""

    def __init__(self, arch: RNNCellArchitecture, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if not isinstance(arch, RNNCellArchitecture):
            raise ValueError(f"arch must be an RNNCellArchitecture, got {type(arch).__name__}")
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size}, {hidden_size}")
        self.arch = arch
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_leaves = arch.num_leaves
        self.children_of = tree_children(arch.num_leaves)
        self.node_ops = tuple((_COMBINES[c], _ACTIVATIONS[a]) for c, a in arch.nodes)
        self.inject_op = (_COMBINES[arch.inject[0]], _ACTIVATIONS[arch.inject[1]])
        rows = self.num_leaves * self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, self.hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros ``(h, c)``, each ``(batch_size, hidden_size)``."""
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=self.weight_hh.dtype)
        return zeros, zeros.clone()

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must be (batch, {self.input_size}), got {tuple(x.shape)}")
        return self.step(self.input_projection(x), state)

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """Every leaf's ``W_i x + b_i`` for inputs ``(..., input_size)`` -> ``(..., L*H)``: it does not depend
        on the recurrence, so a sequence model computes it for all time steps in one matmul."""
        flat = torch.addmm(self.bias_ih, x.reshape(-1, self.input_size), self.weight_ih.t())
        return flat.view(*x.shape[:-1], flat.shape[-1])

    def step(self, wx_t: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One step from the input projection of ``x_t`` (see :meth:`input_projection`)."""
        h, c = self.init_state(wx_t.shape[0], wx_t.device) if state is None else state
        wx = wx_t.split(self.hidden_size, dim=1)
        uh = torch.addmm(self.bias_hh, h, self.weight_hh.t()).split(self.hidden_size, dim=1)
        out: list[torch.Tensor] = []
        c_t: torch.Tensor | None = None
        for k, ((combine, activation), pair) in enumerate(zip(self.node_ops, self.children_of)):
            pre = combine(wx[k], uh[k]) if pair is None else combine(out[pair[0]], out[pair[1]])
            if k == self.arch.cell_from:
                c_t = pre
            a = activation(pre)
            if k == self.arch.inject_into:
                inject_combine, inject_activation = self.inject_op
                a = inject_activation(inject_combine(a, c))
            out.append(a)
        assert c_t is not None
        h_t = out[-1]
        return h_t, (h_t, c_t)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, arch={self.arch}"


class RNNLanguageModel(nn.Module):
    """Word-level LM: embedding -> dropout -> :class:`SearchedCell` over time -> dropout -> decoder.

    ``forward(tokens (T, B), state=None) -> (logits (T, B, V), (h, c))``; the returned state holds plain
    tensors, so a truncated-BPTT loop can pass ``tuple(s.detach() for s in state)`` to the next call.
    ``next_word_loss(tokens, targets, state)`` is the mean cross-entropy a trainer minimises.
    The decoder is a linear layer; with ``tie_weights`` (the default) its weight *is* the embedding's (Press &
    Wolf 2017; the paper uses it for its PTB cells), which needs ``embed_size == hidden_size``. With
    ``adaptive_softmax_cutoffs`` it is torch's adaptive softmax instead (Grave et al. 2017: frequent words in a
    small head, rare ones in clusters behind it), over words ranked by ``word_rank`` (id -> frequency rank;
    identity if None), which computes the loss without scoring every word; ``forward`` then returns
    log-probabilities.
    """

    def __init__(
        self,
        arch: RNNCellArchitecture,
        vocab_size: int,
        embed_size: int = 200,
        hidden_size: int = 200,
        dropout: float = 0.0,
        tie_weights: bool = True,
        adaptive_softmax_cutoffs: Sequence[int] = (),
        word_rank: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if adaptive_softmax_cutoffs and tie_weights:
            raise ValueError("an adaptive softmax has no weight to tie to the embedding: pass tie_weights=False")
        smallest = ADAPTIVE_DIV ** len(adaptive_softmax_cutoffs)  # the last cluster's projection needs >= 1 dim
        if hidden_size < smallest:
            raise ValueError(f"{len(adaptive_softmax_cutoffs)} adaptive softmax clusters need hidden_size >= "
                             f"{smallest}, got {hidden_size}")  # fmt: skip
        if tie_weights and embed_size != hidden_size:
            raise ValueError(
                f"tie_weights needs embed_size == hidden_size, got embed_size={embed_size}, hidden_size={hidden_size}"
            )
        self.vocab_size = int(vocab_size)
        self.embed_size = int(embed_size)
        self.hidden_size = int(hidden_size)
        self.tie_weights = bool(tie_weights)
        self.embedding = nn.Embedding(self.vocab_size, self.embed_size)
        self.drop = nn.Dropout(dropout)
        self.cell = SearchedCell(arch, self.embed_size, self.hidden_size)
        self.decoder: nn.Module
        if adaptive_softmax_cutoffs:
            cutoffs = list(adaptive_softmax_cutoffs)
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(self.hidden_size, self.vocab_size, cutoffs,
                                                         div_value=float(ADAPTIVE_DIV))  # fmt: skip
            rank = torch.arange(self.vocab_size) if word_rank is None else torch.as_tensor(word_rank).cpu()
            if rank.shape != (self.vocab_size,) or not torch.equal(rank.sort().values, torch.arange(self.vocab_size)):
                raise ValueError(f"word_rank must be a permutation of 0..{self.vocab_size - 1}")
            self.register_buffer("word_rank", rank.to(torch.long))
        else:
            self.decoder = nn.Linear(self.hidden_size, self.vocab_size)
        # as in PyTorch's word_language_model example
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if isinstance(self.decoder, nn.Linear):
            nn.init.zeros_(self.decoder.bias)
            if self.tie_weights:
                self.decoder.weight = self.embedding.weight
            else:
                nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    @property
    def arch(self) -> RNNCellArchitecture:
        return self.cell.arch

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros ``(h, c)``, each ``(batch_size, hidden_size)``."""
        return self.cell.init_state(batch_size, device)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        out, state = self._hidden(tokens, state)
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            by_rank = self.decoder.log_prob(out.reshape(-1, self.hidden_size))
            return by_rank[:, self.word_rank].view(*out.shape[:2], self.vocab_size), state
        return self.decoder(out), state

    def next_word_loss(
        self, tokens: torch.Tensor, targets: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Mean cross-entropy of ``targets`` (T, B) given ``tokens`` (T, B), and the state after them."""
        out, state = self._hidden(tokens, state)
        out, targets = out.reshape(-1, self.hidden_size), targets.reshape(-1)
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            return self.decoder(out, self.word_rank[targets]).loss, state
        return F.cross_entropy(self.decoder(out), targets), state

    def _hidden(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The cell's outputs (T, B, hidden) after dropout, and the last state."""
        if tokens.dim() != 2 or tokens.shape[0] < 1:
            raise ValueError(f"tokens must be (seq_len >= 1, batch), got {tuple(tokens.shape)}")
        if state is None:
            state = self.init_state(tokens.shape[1], tokens.device)
        emb = self.drop(self.embedding(tokens))
        outputs = []
        for wx_t in self.cell.input_projection(emb):  # all time steps' W x in one matmul
            h_t, state = self.cell.step(wx_t, state)
            outputs.append(h_t)
        return self.drop(torch.stack(outputs)), state
