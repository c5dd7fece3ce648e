"""What an agent has already proposed, so that it never spends an evaluation on an architecture twice.

An architecture counts as proposed once it was asked for (told or still in flight), by its canonical key
``space.key(arch)``. :meth:`ProposedSet.fresh_tokens` builds a token sequence not proposed yet decision by
decision, never entering a subtree whose sequences were all used (a count of the sequences under each prefix,
kept as they are added: no enumeration, no scan): the rule an agent falls back on when its own sampler keeps
returning known architectures. ``None`` means the space is exhausted.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

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

    def add(self, space: SearchSpace, tokens: tuple[int, ...]) -> None:
        """Remember ``tokens`` (in ``space``) as proposed."""
        self._keys.add(space.key(space.decode(tokens)))
        tokens = tuple(int(t) for t in tokens)
        key = space_key(space)
        under = self._under.setdefault(key, {})
        if tokens in under:
            return  # this spelling is held already
        self._tokens.setdefault(key, []).append(tokens)
        for t in range(1, len(tokens) + 1):  # every proper prefix and the sequence itself
            under[tokens[:t]] = under.get(tokens[:t], 0) + 1

    def free_counts(self, space: SearchSpace, prefix: Sequence[int]) -> list[int]:
        """For each choice of the decision after ``prefix``: how many token sequences that start with ``prefix``
        and that choice were never ruled out (0: that subtree is exhausted)."""
        sizes = [d.num_choices for d in space.decisions]
        t = len(prefix)
        tail = math.prod(sizes[t + 1:])
        under = self._under.get(space_key(space), {})
        prefix = tuple(int(p) for p in prefix)
        return [tail - under.get((*prefix, c), 0) for c in range(sizes[t])]

    def fresh_tokens(
        self, space: SearchSpace, draw: Callable[[Callable[[Sequence[int]], list[int]]], tuple[int, ...]]
    ) -> tuple[int, ...] | None:
        """Token sequences of an architecture not proposed yet, or ``None`` when every architecture of ``space``
        was. ``draw(free)`` builds one sequence decision by decision, taking after each prefix only a choice
        whose count ``free(prefix)[choice]`` is positive (a subtree with unused sequences). Sequences that
        decode to a known key under another spelling are ruled out as they are met (kept with the proposed
        ones, so a resumed agent draws the same) until one is new."""
        while True:
            if len(self._tokens.get(space_key(space), ())) >= math.prod(d.num_choices for d in space.decisions):
                return None
            tokens = tuple(int(t) for t in draw(lambda prefix: self.free_counts(space, prefix)))
            if self.ruled_out(space, tokens):
                raise ValueError(f"draw entered an exhausted subtree: {tokens} was ruled out before")
            if not self.seen(space, tokens):
                return tokens
            self.add(space, tokens)  # another spelling of a known architecture: never drawn again

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
