"""Search strategies (the paper's REINFORCE controller, random search, regularized evolution, SB3 adapters)
and the resumable ask/tell search loop that drives them."""

from agents.base import Agent, Proposal
from agents.evolution import EvolutionConfig, RegularizedEvolutionAgent
from agents.random_search import RandomSearchAgent
from agents.registry import AGENTS, make_agent
from agents.reinforce import Controller, ReinforceAgent, ReinforceConfig

__all__ = [
    "AGENTS",
    "Agent",
    "Controller",
    "EvolutionConfig",
    "Proposal",
    "RandomSearchAgent",
    "RegularizedEvolutionAgent",
    "ReinforceAgent",
    "ReinforceConfig",
    "make_agent",
]
