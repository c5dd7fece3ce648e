"""The REINFORCE controller's options: each one still learns (NAS-Bench-201 and the synthetic reward), sampling
without replacement never repeats and ends when the space is exhausted, resume is exact with every option on,
and the default agent proposes exactly what it proposed before the options existed."""

from __future__ import annotations

import functools
import hashlib
import io
from typing import Any, Callable

import numpy as np
import pytest
import torch

from agents.random_search import RandomSearchAgent
from agents.base import space_key
from agents.reinforce import ReinforceAgent, TunedReinforceAgent
from agents.registry import make_agent
from nas_env.evaluators import SyntheticEvaluator
from nas_env.spaces import CNNSpace
from nas_env.spaces.base import SearchSpace
from nas_env.spaces.nb201 import NB201Space
from nas_env.tabular import NB201Table
from test_agents import TinySpace, _one_torch_thread  # noqa: F401 - the autouse fixture: one torch thread


#: the REINFORCE settings tuned on NB201 before the options existed (docs/nb201_comparison.md)
TUNED = {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01, "grad_clip": 1.0}
#: every option on its own, added to the tuned settings (what docs/nb201_comparison.md measures)
OPTIONS: dict[str, dict[str, Any]] = {
    "per_decision_heads": {"per_decision_heads": True},
    "decision_offsets": {"decision_offsets": True, "per_decision_heads": False},
    "no_repeat": {"no_repeat": True},
    "advantage_norm": {"advantage_norm": True, "lr": 0.005},
    "ppo": {"ppo_clip": 0.2, "ppo_epochs": 4, "batch_size": 4, "advantage_norm": True, "lr": 0.005},
    "importance": {"importance_clip": 2.0},
    "ppo_window": {"ppo_clip": 0.2, "ppo_epochs": 2, "ppo_window": 6, "batch_size": 2, "advantage_norm": True,
                   "lr": 0.01, "entropy_coef": 0.0},
    "entropy_schedule": {"entropy_coef": 0.02, "entropy_coef_end": 0.0, "schedule_evaluations": 150},
    "self_imitation": {"self_imitation": 4},
}
ALL_ON = {"per_decision_heads": True, "decision_offsets": True, "no_repeat": True, "advantage_norm": True, "ppo_clip": 0.2, "ppo_epochs": 2,
          "ppo_window": 7, "importance_clip": 2.0, "entropy_coef_end": 0.0, "schedule_evaluations": 30, "batch_size": 3,
          "self_imitation": 3}


def search(agent: Any, score: Callable[[tuple[int, ...]], float], n: int, ask: int = 1) -> np.ndarray:
    """Ask ``ask`` at a time (``ask`` > 1: rewards arrive after the policy moved) and tell every reward."""
    rewards: list[float] = []
    while len(rewards) < n:
        for proposal in agent.ask(ask):
            rewards.append(score(proposal.tokens))
            agent.tell(proposal, rewards[-1])
    return np.array(rewards[:n])


def nb201_scorer() -> Callable[[tuple[int, ...]], float]:
    """The 12-epoch cifar10-valid validation accuracy of the real table (the NB201 protocol's reward)."""
    space, table = NB201Space(), NB201Table.load()
    column = table.column("cifar10valid_valid_acc_12ep")
    return lambda tokens: float(column[table.index_of(space.decode(tokens).arch_str)]) / 100.0


# ---------------------------------------------------------------------------------------------- each option learns
@functools.lru_cache(maxsize=None)
def random_mean(space_name: str, seed: int, n: int) -> float:
    """Random search's mean reward: the chance level each learned policy is compared with."""
    space, score = scored_space(space_name, seed)
    return float(search(RandomSearchAgent(space, seed=seed), score, n).mean())


def scored_space(space_name: str, seed: int) -> tuple[SearchSpace, Callable[[tuple[int, ...]], float]]:
    if space_name == "nb201":
        return NB201Space(), nb201_scorer()
    space = CNNSpace(num_layers=2)  # 9 decisions, a hidden target per seed
    return space, SyntheticEvaluator(space, target_seed=10 + seed).score


#: (space, architectures, margin of the mean of the last 40 over random search's mean)
LEARNING = [("nb201", 100, 0.05), ("synthetic", 160, 0.15)]


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_option_learns_on_nb201_and_on_the_synthetic_reward(option: str) -> None:
    """Each option on top of the tuned settings with per-decision heads, two proposals in flight, 3 seeds: the
    mean reward of the last 40 architectures beats random search's mean by a margin (NB201's 12-epoch
    validation: random ~0.69, learned ~0.8; the synthetic reward: random ~0.35)."""
    kwargs = {**TUNED, "per_decision_heads": True, **OPTIONS[option]}
    for space_name, n, margin in LEARNING:
        for seed in range(3):
            space, score = scored_space(space_name, seed)
            learned = search(ReinforceAgent(space, seed=seed, **kwargs), score, n, ask=2)[-40:].mean()
            chance = random_mean(space_name, seed, n)
            assert learned > chance + margin, (option, space_name, seed, learned, chance)


# ---------------------------------------------------------------------------------------------- no repeats
def test_no_repeat_never_repeats_and_ends_when_the_space_is_exhausted() -> None:
    space = TinySpace(num_edges=3, num_ops=3)  # 27 architectures
    agent = ReinforceAgent(space, seed=0, no_repeat=True, lr=0.5, batch_size=1, per_decision_heads=True)
    proposed: list[tuple[int, ...]] = []
    for _ in range(20):  # bounded: an agent that repeats itself would never exhaust the space
        proposals = agent.ask(4)
        if not proposals:
            break
        for p in proposals:
            proposed.append(p.tokens)
            agent.tell(p, 1.0 if p.tokens == (0, 1, 2) else 0.0)  # one good cell: the policy concentrates on it
    assert len(proposed) == 27 and len(set(proposed)) == 27
    assert agent.fallbacks > 0  # the concentrated policy's own draws ran dry: the conditional draw finished the space
    assert agent.ask(3) == [] and agent.ask(1) == []


def test_no_repeat_keeps_policy_draws_between_asks_only_while_the_weights_stay() -> None:
    """Draws left over from one ask serve the next only under the same weights: after an update the next ask comes
    from the new policy (here made certain of one cell), not from draws of the old one."""
    space = NB201Space()
    agent = ReinforceAgent(space, seed=3, no_repeat=True, batch_size=2)
    first = agent.ask(1)
    assert len(agent.draws) == 31  # one round of 32 draws of the initial policy, one taken
    second = agent.ask(1)  # no update in between: taken from those draws, no new round
    assert len(agent.draws) <= 30 and second[0].tokens != first[0].tokens
    for proposal in first + second:
        agent.tell(proposal, 0.5)  # the second reward makes the update
    with torch.no_grad():
        for head in agent.controller.heads:
            head.bias[0] += 50.0  # the moved policy proposes (0, ..., 0) with probability ~1
    assert agent.ask(1)[0].tokens == (0,) * space.num_steps


def test_no_repeat_includes_what_is_in_flight() -> None:
    """Architectures asked for but not told yet are never proposed again either."""
    space = TinySpace(num_edges=2, num_ops=3)  # 9 architectures
    agent = ReinforceAgent(space, seed=1, no_repeat=True)
    first = agent.ask(5)
    second = agent.ask(5)
    assert len(first) == 5 and len(second) == 4
    assert len({p.tokens for p in first + second}) == 9


# ---------------------------------------------------------------------------------------------- self-imitation
def test_self_imitation_keeps_the_best_told_architectures_and_pulls_the_policy_back_to_them() -> None:
    """The remembered set is the N best told architectures (ties: the earlier one), and its term raises the
    probability of the best one while every new reward is below it (the batch's own term alone lowers it)."""
    space = NB201Space()
    probabilities = {}
    for n in (0, 3):
        agent = ReinforceAgent(space, seed=2, lr=0.05, batch_size=1, self_imitation=n)
        best = agent.ask(1)[0]
        agent.tell(best, 1.0)  # the first reward: the baseline starts at 1.0
        rewards = {best.tokens: 1.0}
        for k in range(12):
            proposal = agent.ask(1)[0]
            rewards.setdefault(proposal.tokens, 0.5 - 0.01 * k)
            agent.tell(proposal, rewards[proposal.tokens])
        with torch.no_grad():
            probabilities[n] = float(agent._log_prob([best])[0].exp())
        if n:
            kept = [(p.tokens, reward) for p, reward in agent.elite]
            expected = sorted(rewards.items(), key=lambda item: -item[1])[:n]
            assert kept == expected
            assert len({tokens for tokens, _ in kept}) == n
    assert probabilities[3] > 10 * probabilities[0], probabilities


# ---------------------------------------------------------------------------------------------- resume and defaults
def _save_load(value: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("space", [CNNSpace(num_layers=4), NB201Space(), TinySpace(num_edges=3, num_ops=3)],
                         ids=["cnn", "nb201", "tiny-exhausted"])
def test_resume_from_checkpoint_parts_is_exact_with_every_option_on(space: SearchSpace) -> None:
    """Tiny: 27 architectures, so the resumed agent must remember every one proposed to go on identically."""
    evaluator = SyntheticEvaluator(space, target_seed=2)
    agent = ReinforceAgent(space, seed=5, **ALL_ON)
    search(agent, evaluator.score, 20, ask=4)
    in_flight = agent.ask(5)
    agent.tell(in_flight[0], evaluator.score(in_flight[0].tokens))
    in_flight += agent.ask(1)  # under the weights of the last update: leaves policy draws for the next ask
    assert agent.draws and agent.draws_policy == (agent.num_updates, space_key(space))
    parts = {name: _save_load(build()) for name, (_, build) in agent.checkpoint_parts().items()}
    assert set(parts) == {"weights", "rest", "proposed"}
    restored = ReinforceAgent(space, seed=99, **ALL_ON)
    restored.load_checkpoint_parts(parts)

    def go_on(a: ReinforceAgent) -> tuple[list, list, list]:
        tokens = [p.tokens for p in a.ask(1)]  # from the draws kept with the checkpoint, if any are still new
        logs = [a.tell(p, evaluator.score(p.tokens)) for p in in_flight[1:]]
        for _ in range(8):
            for p in a.ask(3):
                tokens.append(p.tokens)
                logs.append(a.tell(p, evaluator.score(p.tokens)))
        return tokens, logs, [float(v.sum()) for v in a.controller.state_dict().values()]

    assert go_on(agent) == go_on(restored)


@pytest.mark.parametrize("space", [NB201Space(), CNNSpace(num_layers=4)], ids=["nb201", "cnn"])
def test_the_sampling_probability_kept_by_ask_is_the_policy_s(space: SearchSpace) -> None:
    """PPO's ratio needs log P(proposal) under the policy that sampled it: ``ask`` keeps what its sampling pass
    computed, which must equal a teacher-forced pass over the same tokens, also after updates."""
    agent = make_agent("reinforce-ppo", space, seed=4, batch_size=4)
    evaluator = SyntheticEvaluator(space, target_seed=1)
    for n in (1, 3, 8, 2, 5, 1):
        proposals = agent.ask(n)
        kept = torch.tensor([agent.sampling_log_prob[p.id] for p in proposals])
        with torch.no_grad():
            recomputed, _ = agent._log_prob(proposals)
        torch.testing.assert_close(kept, recomputed, rtol=0, atol=1e-5)
        for proposal in proposals:
            agent.tell(proposal, evaluator.score(proposal.tokens))
    assert agent.num_updates >= 4


def test_a_checkpoint_written_before_an_option_existed_resumes_with_the_option_off() -> None:
    """A run saved by an older version has no entry for a newer option (here ``ppo_window``) and may hold a retired
    one (``resample_rounds``): it resumes with the option off, and a different setting of the option is still
    refused."""
    space = NB201Space()
    evaluator = SyntheticEvaluator(space, target_seed=2)
    agent = make_agent("reinforce-tuned", space, seed=3)
    search(agent, evaluator.score, 12)
    state = agent.state_dict()
    del state["config"]["ppo_window"], state["window"]
    state["config"]["resample_rounds"] = 10  # a setting older versions wrote, retired since
    restored = make_agent("reinforce-tuned", space, seed=3)
    restored.load_state_dict(state)
    assert [p.tokens for p in restored.ask(4)] == [p.tokens for p in agent.ask(4)]
    with pytest.raises(ValueError, match="same hyperparameters"):
        make_agent("reinforce-tuned", space, seed=3, ppo_clip=0.2, ppo_window=4).load_state_dict(state)


#: sha256 of the proposals of ``_default_proposals`` before the options existed (same seed, same code path)
BEFORE_OPTIONS = {
    ("cnn", "paper"): "68f90a60dcd4704f",
    ("cnn", "tuned"): "d13c2d58ec6e1a2e",
    ("nb201", "paper"): "6a3b3fec12f89dbd",
    ("nb201", "tuned"): "35828502ce4a03fe",
}


@pytest.mark.parametrize("space_name", ["cnn", "nb201"])
def test_default_reinforce_proposes_what_it_did_before_the_options(space_name: str) -> None:
    space = CNNSpace(num_layers=4, predict_strides=True) if space_name == "cnn" else NB201Space()
    evaluator = SyntheticEvaluator(space, target_seed=5)
    for setting, agent in (("paper", make_agent("reinforce", space, seed=11)),
                           ("tuned", make_agent("reinforce", space, seed=11, **TUNED))):
        tokens = []
        for _ in range(6):
            for p in agent.ask(8):
                tokens.append(p.tokens)
                agent.tell(p, evaluator.score(p.tokens))
        digest = hashlib.sha256(repr(tokens).encode()).hexdigest()[:16]
        assert digest == BEFORE_OPTIONS[(space_name, setting)], setting


def test_decision_offsets_start_from_the_shared_heads_policy() -> None:
    """The offsets start at zero and draw nothing from the agent's RNG: the first proposals are the default's."""
    space = CNNSpace(num_layers=3)
    shared, offsets = ReinforceAgent(space, seed=4), ReinforceAgent(space, seed=4, decision_offsets=True)
    assert [p.tokens for p in shared.ask(16)] == [p.tokens for p in offsets.ask(16)]
    assert len(list(offsets.controller.parameters())) > len(list(shared.controller.parameters()))


def test_reinforce_tuned_is_a_named_agent_whose_settings_can_be_overridden() -> None:
    space = NB201Space()
    tuned = make_agent("reinforce-tuned", space, seed=0)
    assert tuned.name == "reinforce-tuned"
    assert all(getattr(tuned.config, k) == v for k, v in TunedReinforceAgent.defaults.items())
    assert make_agent("reinforce-tuned", space, seed=0, lr=0.001).config.lr == 0.001
    with pytest.raises(ValueError, match="cannot be loaded"):
        make_agent("reinforce", space, seed=0, **TunedReinforceAgent.defaults).load_state_dict(tuned.state_dict())


def test_reinforce_ppo_is_a_named_agent_that_learns_the_synthetic_reward() -> None:
    """``reinforce-ppo`` (8 clipped steps on every 16 architectures, its entropy schedule set to the budget), 8
    proposals in flight, 3 seeds: the mean reward of the last 40 beats random search's mean by a margin."""
    assert make_agent("reinforce-ppo", NB201Space()).config.ppo_clip == 0.2
    n = 320
    for seed in range(3):
        space, score = scored_space("synthetic", seed)
        agent = make_agent("reinforce-ppo", space, seed=seed, schedule_evaluations=n)
        learned = search(agent, score, n, ask=8)[-40:].mean()
        chance = random_mean("synthetic", seed, 160)  # chance does not depend on n: the cached 160-run mean
        assert learned > chance + 0.3, (seed, learned, chance)


# ---------------------------------------------------------------------------------------------- what it learned
def test_report_shows_what_the_controller_learned(tmp_path, capsys) -> None:
    """``nas report`` on a reinforce-tuned NB201 run: the start and end probabilities (the start ones are the
    agent's initial weights, the end ones its last checkpoint), the entropy over time; none for random search."""
    from agents.run_dir import SearchConfig
    from agents.search import load_run_agents, run_search
    from evaluation.policy import policy_view
    from nas_cli.main import main

    def search_run(agent: str) -> Any:
        config = SearchConfig(env_id="NAS-Bench-201-v0", env_kwargs={"dataset": "cifar10-valid", "fidelity": 12},
                              agent=agent, seed=3, budget=100, executor={"executor": "inline", "max_in_flight": 1})
        run_search(tmp_path / agent, config)
        return tmp_path / agent

    run_dir = search_run("reinforce-tuned")
    start, end = load_run_agents(run_dir)
    fresh = make_agent("reinforce-tuned", NB201Space(), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(start.controller.parameters(), fresh.controller.parameters()))
    assert end.num_updates == 100 // end.config.batch_size and end._next_id == 100  # its last checkpoint: the end
    view = policy_view(run_dir)
    assert np.allclose(np.nansum(view.start, axis=1), 1.0) and np.allclose(np.nansum(view.end, axis=1), 1.0)
    assert np.nanmax(np.abs(view.start - 0.2)) < 0.06  # the initial policy is near uniform over the 5 operations
    assert view.moved > 0.2 and view.entropy("end") < view.entropy("start") - 1.0
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "What the controller learned" in out and "| edge0->1 |" in out
    assert (run_dir / "report" / "policy.png").is_file()
    html = (run_dir / "report" / "index.html").read_text()
    assert 'id="policy"' in html
    random_dir = search_run("random")
    assert policy_view(random_dir) is None
    assert main(["report", str(random_dir)]) == 0
    assert not (random_dir / "report" / "policy.png").exists()


def test_free_counts_equal_a_count_over_every_proposed_sequence() -> None:
    """The prefix counts kept as sequences are added give what a scan of every proposed sequence gives."""
    from agents.no_repeat import ProposedSet

    space, rng = NB201Space(), np.random.default_rng(0)
    proposed, added = ProposedSet(), []
    for _ in range(400):
        tokens = tuple(int(t) for t in rng.integers(0, 5, size=space.num_steps))
        if not proposed.seen(space, tokens):
            proposed.add(space, tokens)
            added.append(tokens)
    for tokens in added[:60]:
        for t in range(space.num_steps):
            prefix, tail = tokens[:t], 5 ** (space.num_steps - t - 1)
            scan = [tail - sum(1 for s in added if s[:t] == prefix and s[t] == c) for c in range(5)]
            assert proposed.free_counts(space, prefix) == scan


@pytest.mark.parametrize("space", [TinySpace(num_edges=3, num_ops=3), CNNSpace(num_layers=2)],
                         ids=["tiny", "cnn2-anchors"])
@pytest.mark.parametrize("concentrated", [False, True], ids=["spread", "concentrated"])
def test_the_unproposed_draw_samples_the_policy_conditioned_on_not_proposed(
    space: SearchSpace, concentrated: bool
) -> None:
    """The draw ``no_repeat`` falls back on gives P(x) / (1 - P(S)) outside the proposed set S, also when the policy
    has put almost all its mass on S: 20,000 rows drawn in one pass match the exact conditional distribution (over
    every sequence of the tiny space; over the first two decisions of the anchored CNN space)."""
    from agents.grid import every_sequence
    from agents.no_repeat import ProposedSet, UnproposedDraw

    agent = ReinforceAgent(space, seed=3, lr=0.02, batch_size=1)
    target = tuple(int(d.num_choices) - 1 for d in space.decisions)
    for _ in range((5 if isinstance(space, TinySpace) else 6) if concentrated else 0):  # learns to propose the target
        proposal = agent.ask(1)[0]
        agent.tell(proposal, 1.0 if proposal.tokens == target else 0.0)
        agent.tell(agent._new_proposal(target, space), 1.0)
    everything = torch.tensor(every_sequence(space))
    with torch.no_grad():
        log_p = agent.controller.log_prob(everything, space)[0].double()
    proposed = ProposedSet()
    ruled_out = [target] + [tuple(row) for row in everything[torch.argsort(-log_p)[1:12]].tolist()]  # the likeliest
    for tokens in ruled_out:
        proposed.add(space, tokens)
    in_s = torch.tensor([tuple(row) in set(ruled_out) for row in everything.tolist()])
    mass_s = float(log_p.exp()[in_s].sum())
    assert (0.99 < mass_s < 0.9999) if concentrated else mass_s < 0.9, mass_s  # (above float32's resolution)
    exact = torch.where(in_s, 0.0, log_p.exp()) / (1 - mass_s)
    with torch.no_grad():
        sequences_log_p = agent.controller.log_prob(proposed.sequences(space), space)[0]
        draw = UnproposedDraw(proposed, space, sequences_log_p, agent.generator)
        drawn = agent.controller.sample_with(20_000, space, draw)
    assert not any(proposed.ruled_out(space, row) for row in drawn.tolist())
    assert draw.rounded == 0
    if len(everything) > 100:  # compare the joint distribution of the first two decisions
        width = space.decisions[1].num_choices
        cells = everything[:, 0] * width + everything[:, 1]
        exact = torch.zeros(int(cells.max()) + 1, dtype=torch.float64).index_add_(0, cells, exact)
        index = drawn[:, 0] * width + drawn[:, 1]
    else:
        index = torch.tensor([everything.tolist().index(row) for row in drawn.tolist()])
    empirical = torch.bincount(index, minlength=len(exact)).double() / len(drawn)
    assert float((empirical - exact).abs().max()) < 0.02, (empirical, exact)  # ~5 standard errors


def test_asks_under_one_policy_draw_it_without_replacement() -> None:
    """Three asks of one proposal under the same weights, whether served by the policy's own draws kept from an
    earlier ask or by the conditioned refill: the third is the policy's third draw without replacement,
    sum over x1, x2 of P(x1) P(x2) / (1 - P(x1)) P(x3) / (1 - P(x1) - P(x2)) (1,500 trials, a concentrated policy
    on the 27 cells of a tiny space, so that both sources serve)."""
    from agents.grid import every_sequence
    from agents.no_repeat import ProposedSet

    space = TinySpace(num_edges=3, num_ops=3)
    agent = ReinforceAgent(space, seed=3, lr=0.02, batch_size=1)
    target = (2, 2, 2)
    for _ in range(6):  # learns to propose the target (P about 0.96)
        proposal = agent.ask(1)[0]
        agent.tell(proposal, 1.0 if proposal.tokens == target else 0.0)
        agent.tell(agent._new_proposal(target, space), 1.0)
    everything = every_sequence(space)
    with torch.no_grad():
        p = agent.controller.log_prob(torch.tensor(everything), space)[0].double().exp().numpy()
    assert 0.9 < p.max() < 0.99, p.max()
    exact = np.zeros(len(p))
    for first in range(len(p)):
        for second in range(len(p)):
            if second != first:
                rest = 1 - p[first] - p[second]
                third = np.where(np.isin(np.arange(len(p)), [first, second]), 0.0, p / rest)
                exact += p[first] * p[second] / (1 - p[first]) * third
    agent.config.no_repeat, agent.config.batch_size = True, 10**6  # from here on: no update, nothing repeated
    counts, fallbacks = np.zeros(len(p)), 0
    for _ in range(1500):
        agent.proposed, agent.draws_policy = ProposedSet(), None  # a fresh search under the same weights
        agent.fallbacks = 0
        proposals = [agent.ask(1)[0] for _ in range(3)]
        counts[everything.index(proposals[2].tokens)] += 1
        fallbacks += agent.fallbacks
    assert 200 < fallbacks < 2 * 1500 - 200, fallbacks  # both sources served the second and third asks
    assert float(np.abs(counts / counts.sum() - exact).max()) < 0.04, (counts / counts.sum(), exact)  # ~3 s.e.


@pytest.mark.parametrize("options", [{}, {"per_decision_heads": True}, {"decision_offsets": True},
                                     {"temperature": 2.0, "tanh_constant": 1.5}],
                         ids=["per-kind", "per-decision", "offsets", "temperature-tanh"])
@pytest.mark.parametrize("space_name", ["nb201", "rnn-cell"])
def test_the_sequence_pass_equals_the_step_by_step_pass(space_name: str, options: dict[str, Any]) -> None:
    """A plan without anchor points runs its teacher-forced pass as whole-sequence operations: the same
    log-probabilities, entropies and gradients as the step-by-step pass, up to float rounding (the recurrent
    cell space has decisions of 2, 4 and 15 choices: the padded columns must not count)."""
    from nas_env.spaces.rnn_cell import RNNCellSpace

    space = NB201Space() if space_name == "nb201" else RNNCellSpace()
    agent = ReinforceAgent(space, seed=1, **options)
    search(agent, SyntheticEvaluator(space, target_seed=3).score, 20)  # weights away from their initial values
    controller = agent.controller
    tokens = controller.sample(64, space, agent.generator)[0]
    step_log_p, step_entropy, _ = controller._rollout(space, tokens, sample=False)
    log_p, entropy = controller.log_prob(tokens, space)
    assert controller._sequence_layout(space) is not None
    torch.testing.assert_close(log_p, step_log_p, rtol=0, atol=5e-5)
    torch.testing.assert_close(entropy, step_entropy, rtol=0, atol=5e-5)
    parameters = list(controller.parameters())
    step_grads = torch.autograd.grad((step_log_p + 0.1 * step_entropy).sum(), parameters, allow_unused=True)
    grads = torch.autograd.grad((log_p + 0.1 * entropy).sum(), parameters, allow_unused=True)
    for name, a, b in zip([n for n, _ in controller.named_parameters()], step_grads, grads):
        if a is None or b is None:
            assert a is None and b is None or float((a if b is None else b).abs().max()) == 0.0, name
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=name)
