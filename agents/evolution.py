"""Regularized (aging) evolution, Real et al., "Regularized Evolution for Image Classifier Architecture
Search" (AAAI 2019), Algorithm 1, in its asynchronous form.

Until the population holds ``population_size`` results, proposals are uniformly random. After that each
proposal is a tournament: draw ``sample_size`` members of the population uniformly (with replacement, as
in the paper), take the one with the highest reward as parent, and propose ``space.mutate(parent)``
(exactly one decision changed). Every told result joins the population and the oldest member leaves once
it is larger than ``population_size`` (aging: the oldest goes, not the worst).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from agents.base import Agent, Proposal, space_key
from nas_env.spaces.base import SearchSpace


@dataclass
class EvolutionConfig:
    """Hyperparameters of regularized evolution, with the paper's defaults."""

    population_size: int = 100  # P: members kept; the oldest leaves when a new one arrives (Real et al.: 100)
    sample_size: int = 25  # S: tournament size; larger = greedier (Real et al.: 25)

    def __post_init__(self) -> None:
        if self.population_size < 1 or self.sample_size < 1:
            raise ValueError(f"need population_size >= 1 and sample_size >= 1, got {self}")


@dataclass(frozen=True)
class Member:
    """One evaluated architecture in the population."""

    proposal: Proposal
    reward: float


class RegularizedEvolutionAgent(Agent):
    """Aging evolution; asynchronous: ``ask`` may run ahead of ``tell`` by any amount."""

    name: ClassVar[str] = "evolution"

    def __init__(self, space: SearchSpace, seed: int = 0, **hyperparameters: Any) -> None:
        super().__init__(space, seed)
        self.config = EvolutionConfig(**hyperparameters)
        self.rng = np.random.default_rng(seed)
        self.population: deque[Member] = deque()  # oldest first

    def ask(self, n: int = 1) -> list[Proposal]:
        n = self._check_n(n)
        return [self._new_proposal(self._propose_tokens(), self.space) for _ in range(n)]

    def _propose_tokens(self) -> tuple[int, ...]:
        """Random until the population (of the current space) is full, then tournament + mutation."""
        current = space_key(self.space)
        candidates = [m for m in self.population if space_key(m.proposal.space) == current]
        if len(candidates) < self.config.population_size:
            return self.space.sample_tokens(self.rng)
        picks = self.rng.integers(len(candidates), size=self.config.sample_size)
        parent = max((candidates[int(i)] for i in picks), key=lambda m: m.reward)  # first drawn wins ties
        return self.space.encode(self.space.mutate(parent.proposal.arch, self.rng))

    def tell(self, proposal: Proposal, reward: float) -> dict[str, float]:
        reward = self._accept(proposal, reward)
        self.population.append(Member(proposal, reward))
        while len(self.population) > self.config.population_size:
            self.population.popleft()  # aging: remove the oldest
        return {
            "evolution/population": float(len(self.population)),
            "evolution/population_best": max(m.reward for m in self.population),
            "evolution/population_mean": float(np.mean([m.reward for m in self.population])),
        }

    def state_dict(self) -> dict[str, Any]:
        population = [{**self._proposal_to_dict(m.proposal), "reward": m.reward} for m in self.population]
        return {
            **self._base_state(),
            "config": asdict(self.config),
            "rng": self.rng.bit_generator.state,
            "population": population,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("config") != asdict(self.config):
            raise ValueError(f"state was saved with {state.get('config')}, this agent has {asdict(self.config)}")
        self._load_base_state(state)
        self.rng.bit_generator.state = state["rng"]
        self.population = deque(Member(self._proposal_from_dict(d), float(d["reward"])) for d in state["population"])
