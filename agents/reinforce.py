"""The controller of Zoph & Le, "Neural Architecture Search with Reinforcement Learning" (ICLR 2017),
trained with REINFORCE. One file, readable top to bottom against the paper (section 3):

- 3.1 A two-layer LSTM emits the architecture token by token; each token is sampled from a softmax head of
  its kind and its embedding is the next step's input (autoregressive).
- 3.2 REINFORCE with a baseline: grad J = 1/m sum_k sum_t grad log P(a_t | a_<t) (R_k - b), m = 8
  architectures per update, b an exponential moving average of past rewards.
- 3.3 Skip connections through anchor points: at layer i the controller takes one LSTM step (the anchor
  point, hidden state h_i) and decides for every earlier layer j < i whether j feeds i with
  P(j -> i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i)).

The controller is generic: it reads ``space.decisions``; every non-anchor ``kind`` gets one embedding
table and one softmax head shared by all decisions of that kind, and consecutive ``kind == "anchor"``
decisions of one layer form one anchor group. A space without anchors (NAS-Bench-201) is a plain
autoregressive sequence of softmaxes.

Two choices the paper leaves open, made here as in ENAS (Pham et al. 2018), its reference successor:
- the input after an anchor group is the mean of the chosen earlier anchors' hidden states,
  ``sum_j a_j h_j / (1 + sum_j a_j)`` (zeros when none is chosen, and after the anchor point of a layer
  that has no skip decisions, e.g. layer 0);
- the embedding size equals the hidden size (35).

Asynchrony: the paper's 100 replicas sample children, wait for their rewards, and send gradients to the
parameter server, which has meanwhile moved on. Here the rewards of ``batch_size`` proposals (in the
order they are told, whatever order they were asked in) make one update, and their log-probabilities are
recomputed under the *current* weights (no importance correction), like a replica's stale gradient;
``importance_clip`` weights each term by P_now / P_sampled instead.

Options beyond the paper (all off by default; ``reinforce-tuned`` turns some on, docs/nb201_comparison.md
measures each): per-decision heads or per-decision offsets on the per-kind heads, no repeated proposals,
normalised advantages, a clipped multi-epoch (PPO) update, an entropy schedule over the budget, self-imitation
of the best architectures found so far.
"""

from __future__ import annotations

import collections
import copy
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.base import Agent, Proposal, space_key
from agents.no_repeat import ProposedSet, UnproposedDraw
from nas_env.spaces.base import SearchSpace

ANCHOR = "anchor"  # the Decision.kind of binary skip decisions ``source -> layer``


@dataclass
class ReinforceConfig:
    """Hyperparameters of the controller and its REINFORCE update; defaults are the paper's."""

    lstm_layers: int = 2  # paper: two-layer LSTM
    hidden_size: int = 35  # paper: 35 hidden units per layer (embeddings have the same size)
    init_range: float = 0.08  # paper: every weight uniform in [-0.08, 0.08]
    lr: float = 6e-4  # paper: Adam with learning rate 6e-4
    batch_size: int = 8  # paper: m = 8 architectures per controller update
    baseline_decay: float = 0.95  # EMA decay of the baseline b; not in the paper (NASNet 0.95, ENAS 0.99)
    entropy_coef: float = 0.0  # entropy bonus weight; not in the paper (successors use 1e-5 .. 1e-4)
    grad_clip: float | None = None  # max global gradient norm; None = no clipping, as in the paper
    temperature: float | None = None  # logits / temperature before the softmax (ENAS: 5); None = off
    tanh_constant: float | None = None  # logits -> c * tanh(logits) (ENAS: 2.5); None = off
    # options beyond the paper's defaults (all off by default: the default agent samples exactly as before)
    per_decision_heads: bool = False  # one embedding + softmax head per decision (the paper's figure) vs per kind
    decision_offsets: bool = False  # per-kind heads plus a per-decision head and embedding added to them, from 0
    no_repeat: bool = False  # never propose an architecture already proposed (told or in flight)
    advantage_norm: bool = False  # divide R - b by a running std of R - b (EMA with baseline_decay)
    ppo_clip: float | None = None  # clipped surrogate (NASNet's PPO) with ratio to the sampling policy; None = off
    ppo_epochs: int = 1  # gradient steps per update batch (with ppo_clip)
    ppo_window: int = 0  # with ppo_clip: the steps reuse the last ppo_window told architectures, not the batch only
    importance_clip: float | None = None  # weight min(c, P_now / P_sampled) on each reward; None = off (with
    # ppo_clip it is not applied: PPO's ratio to the sampling policy is that weight)
    entropy_coef_end: float | None = None  # entropy_coef moves linearly to this over schedule_evaluations told
    schedule_evaluations: int = 100  # length of the entropy schedule, in told architectures (the search budget)
    self_imitation: int = 0  # every update also pushes up the best N told architectures still above the baseline
    self_imitation_coef: float = 1.0  # weight of that term (self-imitation learning, Oh et al. 2018)

    def __post_init__(self) -> None:
        if self.lstm_layers < 1 or self.hidden_size < 1 or self.batch_size < 1:
            raise ValueError(f"lstm_layers, hidden_size and batch_size must be >= 1: {self}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.self_imitation < 0 or self.self_imitation_coef < 0:
            raise ValueError(f"self_imitation and self_imitation_coef must be >= 0: {self}")
        if self.ppo_epochs < 1 or self.schedule_evaluations < 1:
            raise ValueError(f"ppo_epochs and schedule_evaluations must be >= 1: {self}")
        if self.ppo_window and (self.ppo_clip is None or self.ppo_window < self.batch_size):
            raise ValueError(f"ppo_window needs ppo_clip and must be 0 or >= batch_size ({self.batch_size}), got "
                             f"{self.ppo_window}")
        for name in ("ppo_clip", "importance_clip"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {getattr(self, name)}")

    @property
    def tracks_sampling_log_prob(self) -> bool:
        """Whether proposals keep the log-probability they were sampled with (PPO's ratio, the importance weight)."""
        return self.ppo_clip is not None or self.importance_clip is not None


#: settings that earlier versions wrote into checkpoints and that no longer exist (ignored when loading):
#: ``resample_rounds``, the re-draw rounds of the no-repeat rule before it drew conditioned on "not proposed"
RETIRED_OPTIONS = ("resample_rounds",)


# ---------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Choice:
    """One softmax decision: the token at ``position``, from the head and embedding of ``kind``."""

    position: int
    kind: str


@dataclass(frozen=True)
class AnchorPoint:
    """The anchor point of ``layer``: one LSTM step whose output h_layer is kept for attention, followed
    by the binary skip decisions ``sources[g] -> layer`` at the consecutive ``positions`` (maybe none)."""

    layer: int
    positions: tuple[int, ...]
    sources: tuple[int, ...]


Step = Union[Choice, AnchorPoint]
#: chooses the token at ``position`` of every row from the rows' tokens so far (n, T) and the decision's logits
#: (n, C) (see :meth:`Controller.sample_with`)
Pick = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


def build_plan(space: SearchSpace) -> tuple[Step, ...]:
    """The controller's LSTM steps for ``space``: one per non-anchor decision, plus one anchor point per
    layer that has skip decisions (right before them) or is a skip source (before its first decision)."""
    decisions = space.decisions
    groups: dict[int, list[int]] = {}
    for t, d in enumerate(decisions):
        if d.kind == ANCHOR:
            if d.layer is None or d.source is None or d.num_choices != 2:
                raise ValueError(f"anchor decision {d.name} needs a layer, a source and 2 choices")
            groups.setdefault(d.layer, []).append(t)
    for layer, positions in groups.items():
        if positions != list(range(positions[0], positions[-1] + 1)):
            raise ValueError(f"the skip decisions of layer {layer} are not consecutive: positions {positions}")
    sources = {decisions[t].source for positions in groups.values() for t in positions}
    plan: list[Step] = []
    anchored: set[int] = set()
    for t, d in enumerate(decisions):
        if d.kind == ANCHOR:
            if t != groups[d.layer][0]:
                continue  # decided together with the first decision of its group
            group_sources = tuple(decisions[p].source for p in groups[d.layer])
            missing = [s for s in group_sources if s not in anchored]
            if missing or d.layer in anchored:
                raise ValueError(f"layer {d.layer}: skip sources {missing} have no anchor point before position {t}")
            plan.append(AnchorPoint(d.layer, tuple(groups[d.layer]), group_sources))
            anchored.add(d.layer)
            continue
        if d.layer in sources and d.layer not in groups and d.layer not in anchored:
            plan.append(AnchorPoint(d.layer, (), ()))  # a source without skip decisions of its own (layer 0)
            anchored.add(d.layer)
        plan.append(Choice(t, d.kind))
    return tuple(plan)


def softmax_slots(space: SearchSpace, per_decision: bool) -> dict[str, int]:
    """The controller's embedding/head tables: one per kind (shared by its decisions), or one per non-anchor
    decision, named by its position (``per_decision``), each with its number of choices."""
    if not per_decision:
        return softmax_kinds(space)
    return {str(t): d.num_choices for t, d in enumerate(space.decisions) if d.kind != ANCHOR}


def softmax_kinds(space: SearchSpace) -> dict[str, int]:
    """Every non-anchor decision kind of ``space`` with its number of choices, in order of appearance."""
    kinds: dict[str, int] = {}
    for d in space.decisions:
        if d.kind == ANCHOR:
            continue
        if kinds.setdefault(d.kind, d.num_choices) != d.num_choices:
            raise ValueError(f"decisions of kind {d.kind!r} have {kinds[d.kind]} and {d.num_choices} choices")
    return kinds


@dataclass(frozen=True)
class SequenceLayout:
    """Index tensors that let a plan of plain softmax decisions run as whole-sequence operations: step t reads
    row ``embedding_start[t] + token`` of the kinds' embedding tables stacked, and its logits are the columns
    ``head_columns[t]`` of the heads stacked (``offset_*``: the same for the per-decision offsets, if any);
    ``padding`` marks the columns beyond a step's choices (None when every step has as many)."""

    embedding_start: torch.Tensor  # (T,)
    head_columns: torch.Tensor  # (1, T, C)
    offset_start: torch.Tensor | None
    offset_columns: torch.Tensor | None
    padding: torch.Tensor | None  # (1, T, C) bool

    @staticmethod
    def build(
        slots: list[int], slot_sizes: list[int], offsets: list[int] | None, offset_sizes: list[int], choices: list[int]
    ) -> SequenceLayout:
        """``slots[t]``: the table (kind or decision) of step t; ``offsets[t]``: its offset table; ``choices[t]``."""
        width = max(choices)

        def starts(sizes: list[int], used: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)[used]
            columns = first[:, None] + np.minimum(np.arange(width)[None, :], np.array(choices)[:, None] - 1)
            return torch.from_numpy(first), torch.from_numpy(columns)[None]

        embedding_start, head_columns = starts(slot_sizes, slots)
        offset_start = offset_columns = None
        if offsets is not None:
            offset_start, offset_columns = starts(offset_sizes, offsets)
        padding = torch.from_numpy(np.arange(width)[None, :] >= np.array(choices)[:, None])[None]
        return SequenceLayout(embedding_start, head_columns, offset_start, offset_columns,
                              padding if bool(padding.any()) else None)


# ---------------------------------------------------------------------------------------------- the controller
class Controller(nn.Module):
    """Two-layer LSTM with one embedding and one softmax head per decision kind (or per decision, with
    ``config.per_decision_heads``: ``kinds`` then names decision positions), plus anchor attention."""

    def __init__(
        self, kinds: dict[str, int], config: ReinforceConfig, generator: torch.Generator,
        decisions: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.kinds = dict(kinds)  # kind (or decision position) -> number of choices
        self.decisions = dict(decisions or {})  # decision position -> number of choices (decision_offsets)
        self._decision_index = {position: k for k, position in enumerate(self.decisions)}
        self._kind_index = {kind: k for k, kind in enumerate(self.kinds)}
        self._plans: dict[str, tuple[Step, ...]] = {}
        self._layouts: dict[str, SequenceLayout | None] = {}
        size = config.hidden_size
        with torch.device("meta"):  # allocate without touching the global RNG; reset_parameters fills them
            self.start = nn.Parameter(torch.empty(1, size))  # learned input of the first step
            self.lstm = nn.ModuleList(nn.LSTMCell(size, size) for _ in range(config.lstm_layers))  # stacked
            self.embeddings = nn.ModuleList(nn.Embedding(c, size) for c in self.kinds.values())
            self.heads = nn.ModuleList(nn.Linear(size, c) for c in self.kinds.values())
            self.w_prev = nn.Linear(size, size, bias=False)  # W_prev h_j: the earlier anchor
            self.w_curr = nn.Linear(size, size, bias=False)  # W_curr h_i: the current anchor
            self.v = nn.Linear(size, 1, bias=False)  # v^T tanh(...)
            if self.decisions:  # after every shared parameter: those are drawn exactly as without offsets
                self.offset_embeddings = nn.ModuleList(nn.Embedding(c, size) for c in self.decisions.values())
                self.offset_heads = nn.ModuleList(nn.Linear(size, c) for c in self.decisions.values())
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Paper: every weight uniform in [-init_range, init_range]."""
        for name, parameter in self.named_parameters():
            if name.startswith("offset_"):  # per-decision offsets start at zero, drawing nothing: the initial
                parameter.zero_()  # policy and the sampling RNG are exactly those of the shared heads
            else:
                parameter.uniform_(-self.config.init_range, self.config.init_range, generator=generator)

    def plan(self, space: SearchSpace) -> tuple[Step, ...]:
        """The (cached) plan of ``space``; raises ValueError if it has a kind this controller lacks."""
        key = space_key(space)
        if key not in self._plans:
            for kind, num_choices in softmax_slots(space, self.config.per_decision_heads).items():
                if self.kinds.get(kind) != num_choices:
                    what = "decision" if self.config.per_decision_heads else "kind"
                    raise ValueError(
                        f"space {space.describe()} has {what} {kind!r} with {num_choices} choices; the controller "
                        f"was built for {self.kinds}"
                    )
            self._plans[key] = build_plan(space)
        return self._plans[key]

    def sample(
        self, n: int, space: SearchSpace, generator: torch.Generator | None = None, stats: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` architectures in one batched pass: tokens (n, T), log-probability (n,), entropy (n,) (zeros with
        ``stats`` False). ``generator`` None falls back to torch's global RNG (the agent always passes its own)."""
        tokens = torch.zeros(n, space.num_steps, dtype=torch.long)
        log_prob, entropy, _ = self._rollout(space, tokens, sample=True, generator=generator, stats=stats)
        return tokens, log_prob, entropy

    def sample_with(self, n: int, space: SearchSpace, pick: Pick) -> torch.Tensor:
        """``n`` architectures (n, T) in one batched pass, each token chosen by ``pick(tokens, position, logits)``
        from its decision's logits (n, C) given the tokens before it (e.g. a draw conditioned on "not proposed")."""
        tokens = torch.zeros(n, space.num_steps, dtype=torch.long)
        self._rollout(space, tokens, sample=True, pick=pick, stats=False)
        return tokens

    def log_prob(self, tokens: torch.Tensor, space: SearchSpace) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced: log-probability (n,) of ``tokens`` (n, T) and the summed entropy (n,) of each step.
        A plan without anchor points (NAS-Bench-201) runs as one sequence pass (:meth:`_sequence_pass`)."""
        layout = self._sequence_layout(space)
        if layout is not None:
            return self._sequence_pass(tokens, space, layout)
        log_prob, entropy, _ = self._rollout(space, tokens, sample=False)
        return log_prob, entropy

    def _sequence_layout(self, space: SearchSpace) -> SequenceLayout | None:
        """The (cached) index tensors of :meth:`_sequence_pass` for ``space``; None for a plan with anchor points,
        whose inputs depend on the skip decisions and which runs step by step."""
        key = space_key(space)
        if key not in self._layouts:
            plan = self.plan(space)
            if any(not isinstance(step, Choice) for step in plan):
                self._layouts[key] = None
            else:
                slot_of = [str(s.position) if self.config.per_decision_heads else s.kind for s in plan]  # type: ignore
                self._layouts[key] = SequenceLayout.build(
                    [self._kind_index[k] for k in slot_of], list(self.kinds.values()),
                    [self._decision_index[str(s.position)] for s in plan] if self.decisions else None,  # type: ignore
                    list(self.decisions.values()), [d.num_choices for d in space.decisions],
                )
        return self._layouts[key]

    def _sequence_pass(
        self, tokens: torch.Tensor, space: SearchSpace, layout: SequenceLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher-forced pass of a plan of plain softmax decisions in a few whole-sequence operations: the
        stacked LSTM over all steps at once (``torch.lstm`` with the cells' own weights), every step's logits from
        the heads' weights concatenated; the same function as :meth:`_rollout`, equal up to float rounding."""
        n, num_steps = tokens.shape
        if num_steps != space.num_steps:
            raise ValueError(f"tokens have {num_steps} steps, {space.describe()} has {space.num_steps}")
        previous = tokens[:, :-1]  # the token of step t is the input of step t + 1
        x = F.embedding(previous + layout.embedding_start[:-1], torch.cat([e.weight for e in self.embeddings]))
        if layout.offset_start is not None:
            offsets = torch.cat([e.weight for e in self.offset_embeddings])
            x = x + F.embedding(previous + layout.offset_start[:-1], offsets)
        x = torch.cat([self.start.expand(n, 1, -1), x], dim=1)  # (n, T, hidden)
        zeros = torch.zeros(len(self.lstm), n, self.config.hidden_size)
        weights = [w for layer in self._cell_weights() for w in layer]
        h = torch.lstm(x, (zeros, zeros), weights, True, len(self.lstm), 0.0, self.training, False, True)[0]
        logits = F.linear(h, torch.cat([head.weight for head in self.heads]),
                          torch.cat([head.bias for head in self.heads]))
        logits = logits.gather(2, layout.head_columns.expand(n, -1, -1))  # (n, T, C): each step's own head
        if layout.offset_columns is not None:
            offset_logits = F.linear(h, torch.cat([head.weight for head in self.offset_heads]),
                                     torch.cat([head.bias for head in self.offset_heads]))
            logits = logits + offset_logits.gather(2, layout.offset_columns.expand(n, -1, -1))
        if self.config.temperature is not None:
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        if layout.padding is not None:  # steps with fewer choices than the widest
            logits = logits.masked_fill(layout.padding, -math.inf)
        log_p = F.log_softmax(logits, dim=-1)
        log_prob = log_p.gather(2, tokens.unsqueeze(-1)).squeeze(-1).sum(1)
        plogp = log_p.exp() * (log_p if layout.padding is None else log_p.masked_fill(layout.padding, 0.0))
        return log_prob, -plogp.sum((1, 2))

    def step_logits(self, tokens: torch.Tensor, space: SearchSpace) -> torch.Tensor:
        """Teacher-forced logits (n, T, max_choices) of every step (-inf beyond a decision's choices); the
        logits at step t depend only on tokens before t, so a partly chosen sequence may be padded."""
        _, _, logits = self._rollout(space, tokens, sample=False, keep_logits=True)
        return logits

    def _rollout(
        self,
        space: SearchSpace,
        tokens: torch.Tensor,
        sample: bool,
        generator: torch.Generator | None = None,
        keep_logits: bool = False,
        pick: Pick | None = None,
        stats: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the plan once over the batch: samples into ``tokens`` (``sample=True``; with ``pick``, chosen token
        by token by ``pick``) or reads them. ``stats`` False leaves the log-probability and entropy at 0 (a draw
        that needs only the tokens). Modules are applied through their functional ops (``torch.lstm_cell``,
        ``F.linear``, ``F.embedding``): the same computation without the per-call module overhead."""
        n, num_steps = tokens.shape
        if num_steps != space.num_steps:
            raise ValueError(f"tokens have {num_steps} steps, {space.describe()} has {space.num_steps}")
        log_prob, entropy = torch.zeros(n), torch.zeros(n)
        all_logits = torch.full((n, num_steps, space.max_choices), -math.inf) if keep_logits else None
        anchor_h: dict[int, torch.Tensor] = {}  # h_j of each anchor point
        anchor_w: dict[int, torch.Tensor] = {}  # W_prev h_j, computed once per anchor
        x = self.start.expand(n, -1)
        state = [(torch.zeros(n, self.config.hidden_size),) * 2 for _ in self.lstm]  # (h, c) per LSTM layer
        cells = self._cell_weights()
        heads, embeddings = list(self.heads), list(self.embeddings)  # indexed per step: plain lists are cheaper
        offset_heads = list(self.offset_heads) if self.decisions else []
        offset_embeddings = list(self.offset_embeddings) if self.decisions else []
        for step in self.plan(space):
            h, state = self._lstm_step(x, state, cells)  # h: the top layer's output, (n, hidden)
            if isinstance(step, Choice):
                kind = self._kind_index[str(step.position) if self.config.per_decision_heads else step.kind]
                head = heads[kind]
                logits = F.linear(h, head.weight, head.bias)  # (n, num_choices)
                offset = self._decision_index.get(str(step.position)) if self.decisions else None
                if offset is not None:
                    head = offset_heads[offset]
                    logits = logits + F.linear(h, head.weight, head.bias)
                positions = slice(step.position, step.position + 1)
                token = self._decide(logits.unsqueeze(1), tokens, positions, sample, generator, log_prob, entropy,
                                     all_logits, pick, stats)
                x = F.embedding(token[:, 0], embeddings[kind].weight)  # autoregressive: the token's embedding
                if offset is not None:
                    x = x + F.embedding(token[:, 0], offset_embeddings[offset].weight)
                continue
            anchor_h[step.layer], anchor_w[step.layer] = h, self.w_prev(h)
            if not step.sources:
                x = torch.zeros_like(h)  # no skip decisions here: the mean over no chosen anchors
                continue
            previous = torch.stack([anchor_w[j] for j in step.sources], dim=1)  # (n, G, hidden)
            score = self.v(torch.tanh(previous + self.w_curr(h).unsqueeze(1))).squeeze(-1)  # (n, G)
            logits = torch.stack([torch.zeros_like(score), score], dim=-1)  # softmax = (1 - P, P), P = sigmoid
            positions = slice(step.positions[0], step.positions[-1] + 1)
            skip = self._decide(logits, tokens, positions, sample, generator, log_prob, entropy, all_logits, pick,
                                stats)
            chosen_h = torch.stack([anchor_h[j] for j in step.sources], dim=1)  # (n, G, hidden)
            x = (skip.unsqueeze(-1) * chosen_h).sum(1) / (1.0 + skip.sum(1, keepdim=True))
        return log_prob, entropy, all_logits

    def _cell_weights(self) -> list[tuple[torch.Tensor, ...]]:
        """Each LSTM layer's (weight_ih, weight_hh, bias_ih, bias_hh), the argument order of the functional ops."""
        return [(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh) for cell in self.lstm]

    @staticmethod
    def _lstm_step(
        x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]], cells: list[tuple[torch.Tensor, ...]]
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One step of the stacked LSTM (``cells``: each layer's weight_ih, weight_hh, bias_ih, bias_hh): each layer's
        output is the next layer's input."""
        new_state = []
        for weights, (h, c) in zip(cells, state):
            h, c = torch.lstm_cell(x, (h, c), *weights)
            new_state.append((h, c))
            x = h
        return x, new_state

    def _decide(
        self,
        logits: torch.Tensor,
        tokens: torch.Tensor,
        positions: slice,
        sample: bool,
        generator: torch.Generator | None,
        log_prob: torch.Tensor,
        entropy: torch.Tensor,
        all_logits: torch.Tensor | None,
        pick: Pick | None = None,
        stats: bool = True,
    ) -> torch.Tensor:
        """Sample (or read) the tokens (n, G) at ``positions`` from ``logits`` (n, G, C); adds their
        log-probability and the entropy of their distributions to ``log_prob`` and ``entropy`` in place.
        With ``pick``, each of the G tokens in turn is ``pick(tokens, its position, its logits)``."""
        if self.config.temperature is not None:
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        log_p = F.log_softmax(logits, dim=-1)
        if sample and pick is not None:
            for g, position in enumerate(range(positions.start, positions.stop)):
                tokens[:, position] = pick(tokens, position, logits[:, g].detach())
        elif sample:
            n, group, num_choices = log_p.shape
            drawn = torch.multinomial(log_p.detach().exp().reshape(-1, num_choices), 1, generator=generator)
            tokens[:, positions] = drawn.reshape(n, group)
        token = tokens[:, positions]
        if stats:
            log_prob += log_p.gather(-1, token.unsqueeze(-1)).squeeze(-1).sum(1)
            entropy += -(log_p.exp() * log_p).sum(-1).sum(1)
        if all_logits is not None:
            all_logits[:, positions, : logits.shape[-1]] = logits.detach()
        return token


# ---------------------------------------------------------------------------------------------- the agent
class ReinforceAgent(Agent):
    """The paper's search: sample a batch of architectures, and after every ``batch_size`` rewards take one
    Adam step on ``-mean((R - b) log P(tokens)) - entropy_coef * entropy``. The options of
    :class:`ReinforceConfig` (all off by default) change how it samples and how it updates, never the policy
    class: no repeated proposals, per-decision heads, normalised advantages, a clipped multi-epoch (PPO)
    update, an importance weight for stale rewards, an entropy schedule."""

    name: ClassVar[str] = "reinforce"
    #: settings the agent is built with unless given (``reinforce-tuned`` overrides them)
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, space: SearchSpace, seed: int = 0, **hyperparameters: Any) -> None:
        super().__init__(space, seed)
        self.config = ReinforceConfig(**{**self.defaults, **hyperparameters})
        self._config_dict = asdict(self.config)  # written with every checkpoint: computed once
        self.generator = torch.Generator().manual_seed(self.seed)  # the agent's only source of randomness
        offsets = softmax_slots(space, per_decision=True) if self.config.decision_offsets else None
        self.controller = Controller(softmax_slots(space, self.config.per_decision_heads), self.config, self.generator,
                                     offsets)
        self.controller.plan(space)
        # fused: one kernel for every parameter tensor (a third of the foreach step's time on these small tensors)
        self._parameters = list(self.controller.parameters())  # listed once: the module walk costs per update
        self.optimizer = torch.optim.Adam(self._parameters, lr=self.config.lr, fused=True)
        self.baseline: float | None = None  # EMA of rewards; the first reward initialises it
        self.advantage_var: float | None = None  # EMA of (R - b)^2 (advantage_norm)
        self.pending: list[tuple[Proposal, float]] = []  # told, not yet used in an update
        self.num_updates = 0
        self.proposed = ProposedSet()  # every architecture asked for (no_repeat)
        self.sampling_log_prob: dict[int, float] = {}  # proposal id -> log P when sampled (PPO / importance)
        self.fallbacks = 0  # no_repeat: proposals the policy's own draws did not supply (drawn by UnproposedDraw)
        #: no_repeat: draws not looked at yet, the (update count, space key) of the policy they were drawn from, and
        #: whether they were conditioned on "not proposed" (UnproposedDraw) or are the policy's own; asks take
        #: from them until the policy changes
        self.draws: list[list[int]] = []
        self.draws_policy: tuple[int, str] | None = None
        self.draws_conditioned = False
        #: ppo_window: the last told architectures with the advantage they got when told and their sampling log P
        self.window: collections.deque[tuple[Proposal, float, float]] = collections.deque(maxlen=self.config.ppo_window)
        self.elite: list[tuple[Proposal, float]] = []  # self_imitation: the best told architectures and their rewards

    def set_space(self, space: SearchSpace) -> None:
        self.controller.plan(space)  # fails early on a kind the controller has no head for
        super().set_space(space)

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int = 1) -> list[Proposal]:
        """``n`` proposals sampled in one batched pass of the controller; with ``no_repeat`` only architectures
        never proposed before (fewer, or none, once the space is exhausted)."""
        n = self._check_n(n)
        with torch.no_grad():
            log_prob = None  # of the rows under the policy they were drawn from, when the draw computed it
            if self.config.no_repeat:
                rows = self._sample_new(n)
            else:
                tokens, log_prob, _ = self.controller.sample(n, self.space, self.generator,
                                                             stats=self.config.tracks_sampling_log_prob)
                rows = tokens.tolist()
            proposals = [self._new_proposal(row, self.space) for row in rows]
            if self.config.tracks_sampling_log_prob and proposals:
                if log_prob is None:  # no_repeat's rows come from several draws and masked passes
                    log_prob, _ = self._log_prob(proposals)
                self.sampling_log_prob.update(zip((p.id for p in proposals), log_prob.tolist()))
        return proposals

    def _sample_new(self, n: int) -> list[list[int]]:
        """Up to ``n`` token rows whose architectures were never proposed, drawn from the policy conditioned on
        "not proposed yet". Rows come from a pool of i.i.d. draws of the policy conditioned on "not among a set
        of architectures proposed earlier", looked at in order, each once, and kept if its architecture is still
        new: that is a draw conditioned on "not proposed now" (rejection within the pool), so the pool serves
        every ask until an update (or a new space) changes the policy. Under new weights the pool is one batched
        round of ``max(4 n, 32)`` of the policy's own draws (conditioned on nothing: cheap while the policy is
        spread); once it runs dry under the same weights, :class:`agents.no_repeat.UnproposedDraw` refills it
        with draws conditioned on every spelling ruled out so far (one teacher-forced pass over them, then one
        sampling pass, exact however concentrated the policy is). Once no architecture is left the space is
        exhausted and fewer rows (maybe none) come back."""
        rows: list[list[int]] = []
        policy = (self.num_updates, space_key(self.space))
        if self.draws_policy != policy:  # drawn under other weights (or for another space): not this policy's
            self.draws = self.controller.sample(max(4 * n, 32), self.space, self.generator, stats=False)[0].tolist()
            self.draws_policy, self.draws_conditioned = policy, False
        self._take_new(rows, n)
        while len(rows) < n and not self.proposed.exhausted(self.space):
            sequences = self.proposed.sequences(self.space)
            log_prob = self.controller.log_prob(sequences, self.space)[0] if len(sequences) else torch.zeros(0)
            draw = UnproposedDraw(self.proposed, self.space, log_prob, self.generator)
            self.draws = self.controller.sample_with(max(n - len(rows), 4), self.space, draw).tolist()
            self.draws_conditioned = True
            self._take_new(rows, n)
        return rows

    def _take_new(self, rows: list[list[int]], n: int) -> None:
        """Move pool draws, in order, into ``rows`` until it holds ``n``: each draw is looked at once and its spelling
        ruled out; it is kept if its architecture was never proposed (counted in ``fallbacks`` if it came from
        :class:`agents.no_repeat.UnproposedDraw`)."""
        while len(rows) < n and self.draws:
            row = self.draws.pop(0)
            # the spelling is ruled out either way (a known architecture's new spelling is never drawn again)
            if self.proposed.add(self.space, tuple(row)):
                rows.append(row)
                self.fallbacks += self.draws_conditioned

    def tell(self, proposal: Proposal, reward: float) -> dict[str, float]:
        """Queue the reward; every ``batch_size`` rewards make one update (returns its logged scalars)."""
        self.pending.append((proposal, self._accept(proposal, reward)))
        if len(self.pending) < self.config.batch_size:
            return {}
        batch, self.pending = self.pending[: self.config.batch_size], self.pending[self.config.batch_size :]
        return self._update(batch)

    def entropy_coef(self) -> float:
        """The entropy bonus now: ``entropy_coef``, moved linearly towards ``entropy_coef_end`` over the first
        ``schedule_evaluations`` told architectures (constant without an end value)."""
        end = self.config.entropy_coef_end
        if end is None:
            return self.config.entropy_coef
        told = self._next_id - len(self._outstanding)
        fraction = min(1.0, told / self.config.schedule_evaluations)
        return self.config.entropy_coef + (end - self.config.entropy_coef) * fraction

    def _advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """R - b, divided by the running std of R - b when ``advantage_norm`` (its EMA uses ``baseline_decay``)."""
        assert self.baseline is not None
        advantages = rewards - self.baseline
        if not self.config.advantage_norm:
            return advantages
        square = float((advantages**2).mean())
        if not self.advantage_var:
            self.advantage_var = square  # the first non-zero spread starts the running variance
        else:
            decay = self.config.baseline_decay
            self.advantage_var = decay * self.advantage_var + (1 - decay) * square
        return advantages / (math.sqrt(self.advantage_var) + 1e-8)

    def _update(self, batch: list[tuple[Proposal, float]]) -> dict[str, float]:
        """One REINFORCE step with the EMA baseline (paper, section 3.2); with ``ppo_clip``, ``ppo_epochs``
        steps on the clipped surrogate; with ``importance_clip``, each term weighted by P_now / P_sampled."""
        config = self.config
        rewards = torch.tensor([reward for _, reward in batch])
        if self.baseline is None:
            self.baseline = float(rewards[0])  # the first reward initialises the baseline
        advantages = self._advantages(rewards)
        proposals = [proposal for proposal, _ in batch]
        sampled = None
        if config.tracks_sampling_log_prob:
            sampled = torch.tensor([self.sampling_log_prob.pop(p.id) for p in proposals])
        entropy_coef = self.entropy_coef()
        max_norm = config.grad_clip if config.grad_clip is not None else math.inf
        if config.ppo_window:  # the clipped steps see the window: the new batch and the architectures told before it
            assert sampled is not None
            self.window.extend(zip(proposals, advantages.tolist(), sampled.tolist()))
            proposals = [proposal for proposal, _, _ in self.window]
            advantages = torch.tensor([advantage for _, advantage, _ in self.window])
            sampled = torch.tensor([log_p for _, _, log_p in self.window])
        weight = torch.ones(len(proposals))
        elite, elite_advantages = self._elite_above(self.baseline)
        for _ in range(config.ppo_epochs if config.ppo_clip is not None else 1):
            log_prob, entropy = self._log_prob(proposals + elite)  # under the current weights, in one pass
            elite_log_prob, log_prob, entropy = log_prob[len(proposals):], log_prob[: len(proposals)], \
                entropy[: len(proposals)]
            if config.ppo_clip is not None:
                assert sampled is not None
                ratio = torch.exp(log_prob - sampled)
                clipped = torch.clamp(ratio, 1 - config.ppo_clip, 1 + config.ppo_clip)
                policy_loss = -torch.minimum(ratio * advantages, clipped * advantages).mean()
            else:
                if config.importance_clip is not None:
                    assert sampled is not None
                    weight = torch.exp(log_prob.detach() - sampled).clamp(max=config.importance_clip)
                policy_loss = -(weight * advantages * log_prob).mean()
            loss = policy_loss - entropy_coef * entropy.mean()
            if elite:  # self-imitation: the best architectures so far, each by how far it is above the baseline
                loss = loss - config.self_imitation_coef * (elite_advantages * elite_log_prob).sum() / config.self_imitation
            self.optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self._parameters, max_norm, foreach=True)
            self.optimizer.step()
        for reward in rewards.tolist():  # b <- decay * b + (1 - decay) * R, after the advantages
            self.baseline = config.baseline_decay * self.baseline + (1 - config.baseline_decay) * reward
        self._remember_best(batch)
        self.num_updates += 1
        scalars = {
            "reinforce/loss": float(loss.detach()),
            "reinforce/baseline": self.baseline,
            "reinforce/entropy": float(entropy.detach().mean()),
            "reinforce/log_prob": float(log_prob.detach().mean()),
            "reinforce/reward_mean": float(rewards.mean()),
            "reinforce/advantage_mean": float(advantages.mean()),
            "reinforce/grad_norm": float(grad_norm),
            "reinforce/updates": float(self.num_updates),
        }
        if config.entropy_coef_end is not None:
            scalars["reinforce/entropy_coef"] = entropy_coef
        if config.importance_clip is not None and config.ppo_clip is None:
            scalars["reinforce/importance_weight"] = float(weight.mean())
        if config.no_repeat:
            scalars["reinforce/fallbacks"] = float(self.fallbacks)
        if config.self_imitation:
            scalars["reinforce/self_imitation"] = float(len(elite))
        return scalars

    def _elite_above(self, baseline: float) -> tuple[list[Proposal], torch.Tensor]:
        """The remembered best architectures whose reward is above ``baseline``, and their advantages R - b (divided
        by the running std with ``advantage_norm``, as the batch's are)."""
        above = [(proposal, reward) for proposal, reward in self.elite if reward > baseline]
        advantages = torch.tensor([reward - baseline for _, reward in above])
        if self.config.advantage_norm and self.advantage_var:
            advantages = advantages / (math.sqrt(self.advantage_var) + 1e-8)
        return [proposal for proposal, _ in above], advantages

    def _remember_best(self, batch: list[tuple[Proposal, float]]) -> None:
        """Keep the ``self_imitation`` best told architectures (by reward, the earlier first on ties; one entry per
        spelling)."""
        if not self.config.self_imitation:
            return
        known = {(space_key(p.space), p.tokens) for p, _ in self.elite}
        fresh = [(p, r) for p, r in batch if (space_key(p.space), p.tokens) not in known]
        ranked = sorted(self.elite + fresh, key=lambda item: (-item[1], item[0].id))
        self.elite = ranked[: self.config.self_imitation]

    def _log_prob(self, proposals: Sequence[Proposal]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probabilities and entropies, one pass per space (the curriculum may mix depths)."""
        groups: dict[str, list[int]] = {}
        for i, proposal in enumerate(proposals):
            groups.setdefault(space_key(proposal.space), []).append(i)
        parts = []
        for indices in groups.values():
            space = proposals[indices[0]].space
            tokens = torch.tensor([proposals[i].tokens for i in indices], dtype=torch.long)
            parts.append(self.controller.log_prob(tokens, space))
        if len(parts) == 1:  # one space (the usual case): already in the proposals' order
            return parts[0]
        order = torch.tensor([i for indices in groups.values() for i in indices])
        inverse = torch.argsort(order)
        log_prob = torch.cat([lp for lp, _ in parts])[inverse]
        entropy = torch.cat([ent for _, ent in parts])[inverse]
        return log_prob, entropy

    # ------------------------------------------------------------------ Gymnasium / SB3-style use
    def action_probabilities(self, observation: dict[str, Any]) -> np.ndarray:
        """The controller's distribution over ``Discrete(max_choices)`` at ``observation["step"]`` given the
        tokens chosen so far (NASEnv's observation: 0 = not chosen, k + 1 = token k); (max_choices,) for one
        observation, (n, max_choices) for a batch."""
        tokens, steps, single = self._read_observation(observation)
        with torch.no_grad():
            logits = self.controller.step_logits(tokens, self.space)
        probs = torch.softmax(logits[torch.arange(len(steps)), steps], dim=-1)
        return probs[0].numpy() if single else probs.numpy()

    def predict(
        self,
        observation: dict[str, Any],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``: the next action (sampled with the agent's generator, or the most likely one),
        from the same distribution as :meth:`Controller.sample`; ``state`` is returned unchanged."""
        probs = torch.as_tensor(np.atleast_2d(self.action_probabilities(observation)))
        if deterministic:
            action = probs.argmax(-1)
        else:
            action = torch.multinomial(probs, 1, generator=self.generator)[:, 0]
        action = action.numpy().astype(np.int64)
        return (action.reshape(()) if np.ndim(observation["tokens"]) == 1 else action), state

    def _read_observation(self, observation: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Observation dict -> teacher-forcing tokens (n, T) (unchosen = 0), steps (n,), single or batch."""
        obs_tokens = np.asarray(observation["tokens"], dtype=np.int64)
        single = obs_tokens.ndim == 1
        obs_tokens = np.atleast_2d(obs_tokens)
        steps = np.broadcast_to(np.asarray(observation["step"], dtype=np.int64).reshape(-1), (len(obs_tokens),))
        num_steps = self.space.num_steps
        if obs_tokens.shape[1] != num_steps:
            raise ValueError(f"observation has {obs_tokens.shape[1]} tokens, {self.space.describe()} has {num_steps}")
        if np.any(steps < 0) or np.any(steps >= num_steps):
            raise ValueError(f"observation step {steps.tolist()} outside 0..{num_steps - 1} (episode over?)")
        for row, step in zip(obs_tokens, steps):
            if np.any(row[:step] < 1):
                raise ValueError(f"observation tokens {row.tolist()} have unchosen entries before step {step}")
        return torch.as_tensor(np.maximum(obs_tokens - 1, 0)), torch.as_tensor(steps.copy()), single

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._state(include_weights=True))

    def _state(self, include_weights: bool) -> dict[str, Any]:
        """The state, its tensors shared with the live agent (callers copy or serialise it at once)."""
        pending = [{**self._proposal_to_dict(p), "reward": reward} for p, reward in self.pending]
        state = {
            **self._base_state(),
            "config": self._config_dict,
            "kinds": dict(self.controller.kinds),
            "baseline": self.baseline,
            "pending": pending,
            "num_updates": self.num_updates,
            "generator": self.generator.get_state().numpy().tobytes(),  # bytes: cheap to pickle every event
            "advantage_var": self.advantage_var,
            "sampling_log_prob": {str(k): v for k, v in self.sampling_log_prob.items()},
            "fallbacks": self.fallbacks,
            "draws": self.draws,
            "draws_policy": None if self.draws_policy is None else list(self.draws_policy),
            "draws_conditioned": self.draws_conditioned,
            "window": [{**self._proposal_to_dict(p), "advantage": advantage, "sampled_log_prob": log_p}
                       for p, advantage, log_p in self.window],
            "elite": [{**self._proposal_to_dict(p), "reward": reward} for p, reward in self.elite],
        }
        if include_weights:
            state.update(controller=self.controller.state_dict(), optimizer=self.optimizer.state_dict())
            state.update(proposed=self.proposed.state())
        return state

    def checkpoint_parts(self) -> dict[str, tuple[int | None, Any]]:
        """The weights and optimizer change only on an update (every m rewards): saved then; the set of proposed
        architectures (no_repeat) only on an ask; the rest (pending rewards, baseline, RNG, ids) with every event."""
        parts: dict[str, tuple[int | None, Any]] = {
            "weights": (self.num_updates, lambda: {"controller": self.controller.state_dict(),
                                                   "optimizer": self.optimizer.state_dict()}),  # fmt: skip
            "rest": (None, lambda: self._state(include_weights=False)),
        }
        if self.config.no_repeat:
            parts["proposed"] = (self.proposed.version, lambda: {"proposed": self.proposed.state()})
        return parts

    def load_checkpoint_parts(self, parts: dict[str, Any]) -> None:
        self.load_state_dict({**parts["rest"], **parts["weights"], **parts.get("proposed", {})})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("config")
        if isinstance(saved, dict):  # an option added after the checkpoint was written was off when it was
            saved = {k: v for k, v in saved.items() if k not in RETIRED_OPTIONS}
            saved = {**{k: v for k, v in asdict(ReinforceConfig()).items() if k not in saved}, **saved}
        mine = asdict(self.config)
        if isinstance(saved, dict) and saved != mine:
            differing = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
            written = ", ".join(f"{k}={saved.get(k)!r}" for k in differing)
            has = ", ".join(f"{k}={mine.get(k)!r}" for k in differing)
            raise ValueError(
                f"the checkpoint was written with {written} and this agent has {has}: resume with the same "
                f"hyperparameters (agent_kwargs {json.dumps({k: saved.get(k) for k in differing})}; a run directory "
                f"keeps them in its config.json)"
            )
        if saved != mine or state.get("kinds") != self.controller.kinds:
            raise ValueError(
                f"state was saved with config {state.get('config')} and kinds {state.get('kinds')}; this agent "
                f"has {mine} and {self.controller.kinds}: construct it with the same hyperparameters"
            )
        self._load_base_state(state)
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.pending = [(self._proposal_from_dict(d), float(d["reward"])) for d in state["pending"]]
        self.num_updates = int(state["num_updates"])
        self.advantage_var = state.get("advantage_var")  # absent from checkpoints older than the options
        self.sampling_log_prob = {int(k): float(v) for k, v in state.get("sampling_log_prob", {}).items()}
        self.fallbacks = int(state.get("fallbacks", 0))
        self.draws = [list(row) for row in state.get("draws", [])]
        draws_policy = state.get("draws_policy")
        self.draws_policy = None if draws_policy is None else (int(draws_policy[0]), str(draws_policy[1]))
        self.draws_conditioned = bool(state.get("draws_conditioned", False))
        self.window.clear()
        self.window.extend((self._proposal_from_dict(d), float(d["advantage"]), float(d["sampled_log_prob"]))
                           for d in state.get("window", []))
        self.elite = [(self._proposal_from_dict(d), float(d["reward"])) for d in state.get("elite", [])]
        self.proposed.load(state.get("proposed", {}), lambda key: self._resolve_space(json.loads(key)))
        generator = state["generator"]
        if isinstance(generator, (bytes, bytearray)):
            generator = torch.frombuffer(bytearray(generator), dtype=torch.uint8)
        self.generator.set_state(generator)


class TunedReinforceAgent(ReinforceAgent):
    """The same controller and update with the settings recommended for searches of about 100 evaluations,
    chosen on NAS-Bench-201 tuning seeds (1000+) by validation reward only; among batch sizes level on it, 4 for
    its cost (docs/nb201_comparison.md). Any hyperparameter given still overrides these."""

    name: ClassVar[str] = "reinforce-tuned"
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 0.02, "batch_size": 4, "baseline_decay": 0.8, "entropy_coef": 0.01, "grad_clip": 1.0,
        "no_repeat": True, "decision_offsets": True, "self_imitation": 4,
    }


class PPOReinforceAgent(ReinforceAgent):
    """The same controller with NASNet's clipped multi-epoch update, the settings recommended for searches of about
    1,000 evaluations: one head per decision, 16 architectures per update reused for 8 clipped steps, normalised
    advantages, an entropy bonus that falls to 0 over ``schedule_evaluations`` (set it to the search's budget).
    Chosen on NAS-Synthetic-v0 tuning seeds (1000+; docs/nb201_comparison.md). Any hyperparameter given still
    overrides these."""

    name: ClassVar[str] = "reinforce-ppo"
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 0.01, "batch_size": 16, "baseline_decay": 0.9, "entropy_coef": 0.03, "entropy_coef_end": 0.0,
        "schedule_evaluations": 1000, "grad_clip": 1.0, "per_decision_heads": True, "advantage_norm": True,
        "ppo_clip": 0.2, "ppo_epochs": 8,
    }
