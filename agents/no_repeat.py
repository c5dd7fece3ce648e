"""What an agent has already proposed, so that it never spends an evaluation on an architecture twice.

An architecture counts as proposed once it was asked for (told or still in flight), by its canonical key
``space.key(arch)``. :class:`UnproposedDraw` samples a policy conditioned on "not proposed": at each decision
the probability of a choice loses the mass of the proposed sequences under it, and a subtree whose sequences
were all used is never entered (a count of the sequences under each prefix, kept as they are added: no
enumeration, no scan).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from agents.base import space_key
from nas_env.spaces.base import SearchSpace


class ProposedSet:
    """Keys and token sequences proposed so far, per space (a depth curriculum changes the space)."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._tokens: dict[str, list[tuple[int, ...]]] = {}  # space key -> token sequences ruled out, in order
        # space key -> prefix -> how many sequences ruled out start with it (a whole sequence: 1 if ruled out)
        self._under: dict[str, dict[tuple[int, ...], int]] = {}
        self._shapes: dict[str, list[tuple[int, int]]] = {}  # space key -> its _tails (derived, never saved)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def version(self) -> int:
        """Grows with every change (the number of token sequences held): a checkpoint part's version."""
        return sum(len(seqs) for seqs in self._tokens.values())

    def ruled_out(self, space: SearchSpace, tokens: Sequence[int]) -> bool:
        """Whether this very spelling ``tokens`` (a whole sequence of ``space``) was ruled out."""
        return tuple(int(t) for t in tokens) in self._under.get(space_key(space), {})

    def seen(self, space: SearchSpace, tokens: tuple[int, ...]) -> bool:
        """Whether ``tokens`` in ``space`` decode to an architecture already proposed."""
        if self.ruled_out(space, tokens):
            return True  # the same spelling: no need to decode
        return space.key(space.decode(tokens)) in self._keys

    def add(self, space: SearchSpace, tokens: tuple[int, ...]) -> bool:
        """Remember ``tokens`` (in ``space``) as proposed; whether their architecture is new (one decode, where
        :meth:`seen` then ``add`` would take two)."""
        tokens = tuple(int(t) for t in tokens)
        key = space_key(space)
        under = self._under.setdefault(key, {})
        if tokens in under:
            return False  # this spelling is held already, and its architecture with it
        arch_key = space.key(space.decode(tokens))
        new = arch_key not in self._keys
        self._keys.add(arch_key)
        self._tokens.setdefault(key, []).append(tokens)
        for t in range(1, len(tokens) + 1):  # every proper prefix and the sequence itself
            under[tokens[:t]] = under.get(tokens[:t], 0) + 1
        return new

    def free_counts(self, space: SearchSpace, prefix: Sequence[int]) -> list[int]:
        """For each choice of the decision after ``prefix``: how many token sequences that start with ``prefix``
        and that choice were never ruled out (0: that subtree is exhausted)."""
        key = space_key(space)
        num_choices, tail = self._tails(space, key)[len(prefix)]
        under = self._under.get(key, {})
        prefix = tuple(int(p) for p in prefix)
        return [tail - under.get((*prefix, c), 0) for c in range(num_choices)]

    def exhausted(self, space: SearchSpace) -> bool:
        """Whether every token sequence of ``space`` was ruled out (nothing is left to propose)."""
        key = space_key(space)
        num_choices, tail = self._tails(space, key)[0]
        return len(self._tokens.get(key, ())) >= num_choices * tail

    def _tails(self, space: SearchSpace, key: str) -> list[tuple[int, int]]:
        """Per decision t of ``space`` (whose key is ``key``): its number of choices, and how many sequences share
        a prefix of length t + 1 (computed once per space)."""
        if key not in self._shapes:
            sizes = [d.num_choices for d in space.decisions]
            self._shapes[key] = [(sizes[t], math.prod(sizes[t + 1:])) for t in range(len(sizes))]
        return self._shapes[key]

    def sequences(self, space: SearchSpace) -> torch.Tensor:
        """The token sequences ruled out in ``space`` (k, T), in the order they were added."""
        seqs = self._tokens.get(space_key(space), [])
        return torch.tensor(seqs, dtype=torch.long).reshape(len(seqs), space.num_steps)

    # ------------------------------------------------------------------ checkpointing
    def state(self) -> dict[str, Any]:
        """Plain data: per space, its config key and the token sequences as one int tensor (cheap to pickle)."""
        return {key: torch.tensor(seqs, dtype=torch.int16).reshape(len(seqs), -1) for key, seqs in self._tokens.items()}

    def load(self, state: dict[str, Any], resolve: Any) -> None:
        """Restore :meth:`state`; ``resolve(space_config_json)`` gives the space of a key back."""
        self.__init__()
        for key, array in state.items():
            space = resolve(key)
            for row in torch.as_tensor(array).tolist():
                self.add(space, tuple(row))


class UnproposedDraw:
    """A ``pick`` for :meth:`agents.reinforce.Controller.sample_with` that draws each row from the policy P
    conditioned on "not proposed": P(x) / (1 - P(S)) for x outside the proposed set S, exactly, in one pass.

    At a decision after prefix p, choice c gets weight P(c | p) - sum of P(s | p) over the proposed s under p + c:
    the policy's mass of the unproposed sequences under p + c, relative to p. The proposed sequences' log P
    (``log_prob``, one teacher-forced pass under the same policy) and each row's log P(p) so far give it. A
    subtree with no unproposed sequence (its count is 0) is masked exactly, whatever the rounding; if rounding
    leaves no weight on any choice that still has one (the policy put almost all its mass on S), the row draws
    from the policy with only those exhausted choices masked (``rounded`` counts such decisions). The
    arithmetic is numpy float64 on a handful of numbers per decision; the draw uses the agent's generator.
    """

    def __init__(
        self, proposed: ProposedSet, space: SearchSpace, log_prob: torch.Tensor, generator: torch.Generator
    ) -> None:
        self.proposed, self.space, self.generator = proposed, space, generator
        self.sequences = proposed.sequences(space).numpy()  # (k, T)
        self.log_prob = log_prob.detach().double().numpy()  # (k,) log P(s) of each proposed sequence
        self.path: np.ndarray | None = None  # (n,) log P(prefix) of each row so far
        self.match: np.ndarray | None = None  # (n, k) whether proposed sequence i starts with row r's prefix
        self.rounded = 0

    def __call__(self, tokens: torch.Tensor, position: int, logits: torch.Tensor) -> torch.Tensor:
        n, num_choices = logits.shape
        if self.path is None or self.match is None:
            self.path = np.zeros(n)
            self.match = np.ones((n, len(self.sequences)), dtype=bool)
        log_p = torch.log_softmax(logits.double(), dim=-1).numpy()
        probs = np.exp(log_p)
        column = self.sequences[:, position]
        # taken[r, c]: the mass, relative to row r's prefix, of the proposed sequences under that prefix and c
        under = np.exp(np.where(self.match, self.log_prob[None, :] - self.path[:, None], -np.inf))  # (n, k)
        taken = under @ (column[:, None] == np.arange(num_choices)[None, :])  # (n, C)
        weights = np.empty((n, num_choices))
        for r, prefix in enumerate(tokens[:, :position].tolist()):
            open_ = np.asarray(self.proposed.free_counts(self.space, prefix)) > 0
            weights[r] = np.clip(probs[r] - taken[r], 0.0, None) * open_
            if weights[r].sum() <= 0:
                weights[r] = probs[r] * open_
                self.rounded += 1
        choice = torch.multinomial(torch.from_numpy(weights), 1, generator=self.generator)[:, 0]
        chosen = choice.numpy()
        self.path = self.path + log_p[np.arange(n), chosen]
        self.match &= column[None, :] == chosen[:, None]
        return choice
