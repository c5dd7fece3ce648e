"""Agents by name, for configs and the command line: ``make_agent("reinforce", space, seed=0, lr=6e-4)``."""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.evolution import RegularizedEvolutionAgent
from agents.grid import GridSearchAgent
from agents.random_search import RandomSearchAgent
from agents.reinforce import PPOReinforceAgent, ReinforceAgent, TunedReinforceAgent
from nas_env.spaces.base import SearchSpace

AGENTS: dict[str, type[Agent]] = {
    ReinforceAgent.name: ReinforceAgent,
    TunedReinforceAgent.name: TunedReinforceAgent,
    PPOReinforceAgent.name: PPOReinforceAgent,
    RandomSearchAgent.name: RandomSearchAgent,
    RegularizedEvolutionAgent.name: RegularizedEvolutionAgent,
    GridSearchAgent.name: GridSearchAgent,
}

#: the ask/tell agents (driven by agents.search.Search), by name
ASK_TELL_AGENTS: tuple[str, ...] = tuple(AGENTS)
#: the Stable-Baselines3 agents (driven by agents.sb3.run_sb3_search; they need the ``sb3`` extra)
SB3_AGENTS: tuple[str, ...] = ("ppo", "a2c", "maskable-ppo", "recurrent-ppo")
#: the SB3 agents whose algorithm comes from sb3-contrib rather than stable-baselines3 itself
SB3_CONTRIB_AGENTS: tuple[str, ...] = ("maskable-ppo", "recurrent-ppo")
#: every agent name of the command line and of configs
ALL_AGENTS: tuple[str, ...] = ASK_TELL_AGENTS + SB3_AGENTS


def make_agent(name: str, space: SearchSpace, seed: int = 0, **kwargs: Any) -> Agent:
    """The agent called ``name`` over ``space``; ``kwargs`` are its hyperparameters (see its config)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name](space, seed=seed, **kwargs)
