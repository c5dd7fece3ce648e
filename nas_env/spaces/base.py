"""What every search space offers: a fixed sequence of decisions, each a choice among a few values.

A space turns a sequence of integer tokens (one per decision, each an index into that decision's
choices) into an :class:`Architecture` and back. Agents only ever see tokens and masks; children are
built from architectures.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any, ClassVar, Sequence

import numpy as np


class InvalidTokenError(ValueError):
    """A token sequence that does not describe an architecture of this space."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """One step of the token sequence.

    ``kind`` groups decisions that share a softmax head in a controller (e.g. every ``filter_height``);
    ``choices`` are the values the token indexes; ``layer`` and ``source`` locate anchor (skip)
    decisions: ``source -> layer`` is the connection the binary token switches on.
    """

    name: str
    kind: str
    choices: tuple[Any, ...]
    layer: int | None = None
    source: int | None = None

    @property
    def num_choices(self) -> int:
        return len(self.choices)


class Architecture(abc.ABC):
    """A frozen, hashable, JSON-serialisable description of one child network."""

    space_name: ClassVar[str]

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``from_dict(to_dict())`` gives an equal architecture."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> "Architecture":
        """Inverse of :meth:`to_dict`."""

    def to_json(self) -> str:
        return json.dumps({"space": self.space_name, **self.to_dict()}, sort_keys=True)


class SearchSpace(abc.ABC):
    """A sequence of :class:`Decision` s with decode/encode, masks, sampling and mutation."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def decisions(self) -> tuple[Decision, ...]:
        """Every decision, in token order."""

    @abc.abstractmethod
    def decode(self, tokens: Sequence[int]) -> Architecture:
        """Tokens -> architecture; raises :class:`InvalidTokenError` naming the bad position."""

    @abc.abstractmethod
    def encode(self, arch: Architecture) -> tuple[int, ...]:
        """Architecture -> tokens (inverse of :meth:`decode`)."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable: ``type(self)(**config())`` is this space."""

    @abc.abstractmethod
    def architecture_from_dict(self, d: dict[str, Any]) -> Architecture:
        """Rebuild an architecture of this space from :meth:`Architecture.to_dict` output."""

    # ------------------------------------------------------------------ derived, shared by all spaces
    @property
    def num_steps(self) -> int:
        return len(self.decisions)

    @property
    def max_choices(self) -> int:
        """Size of a Discrete action space that covers every decision."""
        return max(d.num_choices for d in self.decisions)

    def action_mask(self, step: int) -> np.ndarray:
        """Boolean mask of length :attr:`max_choices`: the valid tokens at ``step``."""
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} outside 0..{self.num_steps - 1}")
        mask = np.zeros(self.max_choices, dtype=bool)
        mask[: self.decisions[step].num_choices] = True
        return mask

    def check_token(self, step: int, token: int) -> None:
        """Raise :class:`InvalidTokenError` unless ``token`` is a valid choice at ``step``."""
        decision = self.decisions[step]
        if not (isinstance(token, (int, np.integer)) and 0 <= int(token) < decision.num_choices):
            raise InvalidTokenError(
                f"token {token!r} at step {step} ({decision.name}) is not one of the "
                f"{decision.num_choices} choices 0..{decision.num_choices - 1} {list(decision.choices)}"
            )

    def check_tokens(self, tokens: Sequence[int]) -> tuple[int, ...]:
        """Validate a full token sequence; returns it as a tuple of ints."""
        if len(tokens) != self.num_steps:
            raise InvalidTokenError(f"expected {self.num_steps} tokens for {self.describe()}, got {len(tokens)}")
        for step, token in enumerate(tokens):
            self.check_token(step, token)
        return tuple(int(t) for t in tokens)

    def sample_tokens(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Uniformly random valid tokens."""
        return tuple(int(rng.integers(d.num_choices)) for d in self.decisions)

    def sample(self, rng: np.random.Generator | int | None = None) -> Architecture:
        """A uniformly random architecture (seeded by ``rng``)."""
        return self.decode(self.sample_tokens(np.random.default_rng(rng)))

    def mutate(self, arch: Architecture, rng: np.random.Generator | int | None = None) -> Architecture:
        """Change exactly one decision to a different value (the regularized-evolution mutation)."""
        rng = np.random.default_rng(rng)
        tokens = list(self.encode(arch))
        mutable = [i for i, d in enumerate(self.decisions) if d.num_choices > 1]
        step = int(rng.choice(mutable))
        options = [c for c in range(self.decisions[step].num_choices) if c != tokens[step]]
        tokens[step] = int(rng.choice(options))
        return self.decode(tokens)

    def key(self, arch: Architecture) -> str:
        """Canonical key: equal for architectures that build the same network."""
        return arch.to_json()

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def architecture_from_json(self, text: str) -> Architecture:
        d = json.loads(text)
        d.pop("space", None)
        return self.architecture_from_dict(d)
