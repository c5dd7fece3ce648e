"""Agents by name, for configs and the command line: ``make_agent("reinforce", space, seed=0, lr=6e-4)``."""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.evolution import RegularizedEvolutionAgent
from agents.random_search import RandomSearchAgent
from agents.reinforce import ReinforceAgent
from nas_env.spaces.base import SearchSpace

AGENTS: dict[str, type[Agent]] = {
    ReinforceAgent.name: ReinforceAgent,
    RandomSearchAgent.name: RandomSearchAgent,
    RegularizedEvolutionAgent.name: RegularizedEvolutionAgent,
}


def make_agent(name: str, space: SearchSpace, seed: int = 0, **kwargs: Any) -> Agent:
    """The agent called ``name`` over ``space``; ``kwargs`` are its hyperparameters (see its config)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name](space, seed=seed, **kwargs)
