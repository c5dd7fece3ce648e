"""Random search: every proposal is drawn uniformly from the space; rewards are ignored.

The baseline every learned search must beat (the paper's question "how much time does RL save against
random search?").
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from agents.base import Agent, Proposal
from nas_env.spaces.base import SearchSpace


class RandomSearchAgent(Agent):
    """Uniform sampling through :meth:`SearchSpace.sample_tokens`, seeded by a numpy Generator."""

    name: ClassVar[str] = "random"

    def __init__(self, space: SearchSpace, seed: int = 0, **hyperparameters: Any) -> None:
        super().__init__(space, seed, **hyperparameters)  # it has none: unknown ones raise TypeError
        self.rng = np.random.default_rng(seed)

    def ask(self, n: int = 1) -> list[Proposal]:
        n = self._check_n(n)
        return [self._new_proposal(self.space.sample_tokens(self.rng), self.space) for _ in range(n)]

    def tell(self, proposal: Proposal, reward: float) -> dict[str, float]:
        self._accept(proposal, reward)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        self.rng.bit_generator.state = state["rng"]
