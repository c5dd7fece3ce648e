"""The interface every search agent offers the search loop: ``ask`` for proposals, ``tell`` their rewards.

Results arrive asynchronously and in any order (children train on many workers at once), so an agent
never assumes that the reward of one proposal comes before the next ``ask``. Everything an agent needs
to resume exactly is in :meth:`Agent.state_dict`, made of plain data and tensors only, so that
``torch.save`` / ``torch.load`` (``weights_only=True``) round-trip it.
"""

from __future__ import annotations

import abc
import json
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from nas_env.spaces import space_from_config
from nas_env.spaces.base import Architecture, SearchSpace


@dataclass(frozen=True)
class Proposal:
    """One architecture an agent asks to be evaluated."""

    id: int  # unique per agent, increasing
    tokens: tuple[int, ...]
    arch: Architecture
    space: SearchSpace  # the space it was sampled in (depth may change under the curriculum)


def space_to_config(space: SearchSpace) -> dict[str, Any]:
    """``{"name": ..., **space.config()}``: the plain-data form a state dict stores a space in."""
    return {"name": space.name, **space.config()}


def space_key(space: SearchSpace) -> str:
    """A string equal for two spaces exactly when they hold the same decisions (same name and config). Agents ask
    it for every proposal; the key of each live space object is computed once (spaces do not change after
    construction)."""
    cached = _SPACE_KEYS.get(id(space))
    if cached is not None and cached[0]() is space:
        return cached[1]
    key = json.dumps(space_to_config(space), sort_keys=True)
    if len(_SPACE_KEYS) >= 64:  # stale ids of dead spaces: start again
        _SPACE_KEYS.clear()
    _SPACE_KEYS[id(space)] = (weakref.ref(space), key)
    return key


_SPACE_KEYS: dict[int, tuple[weakref.ref, str]] = {}  # id(space) -> (the space, its key), see space_key


class Agent(abc.ABC):
    """Base class: proposal ids, the current space, and the bookkeeping of proposals awaiting a reward."""

    name: ClassVar[str]

    def __init__(self, space: SearchSpace, seed: int = 0, **hyperparameters: Any) -> None:
        if hyperparameters:
            raise TypeError(f"{type(self).__name__} got unknown hyperparameters {sorted(hyperparameters)}")
        self.space = space
        self.seed = int(seed)
        self._next_id = 0
        self._outstanding: set[int] = set()  # ids asked for whose reward has not been told yet

    # ------------------------------------------------------------------ the interface
    @abc.abstractmethod
    def ask(self, n: int = 1) -> list[Proposal]:
        """Up to ``n`` new proposals; fewer, or none, only when the agent has nothing left to propose (an
        exhausted grid): the search loop then ends once what is in flight is told."""

    @abc.abstractmethod
    def tell(self, proposal: Proposal, reward: float) -> dict[str, float]:
        """Record the reward of one proposal; returns named scalars to log when something happened, else {}."""

    def checkpoint_parts(self) -> dict[str, tuple[int | None, Any]]:
        """The state as named parts, each ``(version, build)``: a search saves a part only when its version
        changed since the last save (``None``: every time), so large parts that rarely change (a controller's
        weights, updated every m rewards) are not rewritten with every event. ``build()`` gives the part.
        :meth:`load_checkpoint_parts` takes the built parts back. The default is one part, the state dict."""
        return {"state": (None, self.state_dict)}

    def load_checkpoint_parts(self, parts: dict[str, Any]) -> None:
        """Restore from the parts of :meth:`checkpoint_parts`."""
        self.load_state_dict(parts["state"])

    def set_space(self, space: SearchSpace) -> None:
        """Later asks sample in ``space`` (the depth curriculum); proposals already out keep their own."""
        self.space = space

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as plain data and tensors."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (possibly after ``torch.save`` / ``torch.load``)."""

    # ------------------------------------------------------------------ helpers for subclasses
    def _check_n(self, n: int) -> int:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"ask(n) needs a positive int, got {n!r}")
        return n

    def _new_proposal(self, tokens: Sequence[int], space: SearchSpace) -> Proposal:
        """Decode ``tokens`` into a proposal with the next id and remember it as awaiting a reward."""
        tokens = tuple(int(t) for t in tokens)
        proposal = Proposal(id=self._next_id, tokens=tokens, arch=space.decode(tokens), space=space)
        self._next_id += 1
        self._outstanding.add(proposal.id)
        return proposal

    def _accept(self, proposal: Proposal, reward: float) -> float:
        """Check that ``proposal`` is one of ours still awaiting its reward; returns the reward as a float."""
        if proposal.id not in self._outstanding:
            state = "was already told" if proposal.id < self._next_id else "was never asked for"
            raise ValueError(f"{self.name}: proposal {proposal.id} {state}")
        reward = float(reward)
        if reward != reward:  # NaN would poison the baseline / the population ranking
            raise ValueError(f"{self.name}: reward of proposal {proposal.id} is NaN")
        self._outstanding.discard(proposal.id)
        return reward

    def _resolve_space(self, config: dict[str, Any]) -> SearchSpace:
        """Rebuild a stored space: the current one if equal, else ``type(current)(**config)`` when the names
        match (the :meth:`SearchSpace.config` contract), else :func:`nas_env.spaces.space_from_config`."""
        config = dict(config)
        if json.dumps(config, sort_keys=True) == space_key(self.space):
            return self.space
        name = config.pop("name")
        if name == self.space.name:
            return type(self.space)(**config)
        return space_from_config({"name": name, **config})

    def _proposal_to_dict(self, proposal: Proposal) -> dict[str, Any]:
        return {"id": proposal.id, "tokens": list(proposal.tokens), "space": space_to_config(proposal.space)}

    def _proposal_from_dict(self, d: dict[str, Any]) -> Proposal:
        space = self._resolve_space(d["space"])
        tokens = tuple(int(t) for t in d["tokens"])
        return Proposal(id=int(d["id"]), tokens=tokens, arch=space.decode(tokens), space=space)

    def _base_state(self) -> dict[str, Any]:
        return {
            "agent": self.name,
            "space": space_to_config(self.space),
            "next_id": self._next_id,
            "outstanding": sorted(self._outstanding),
        }

    def _load_base_state(self, state: dict[str, Any]) -> None:
        if state.get("agent") != self.name:
            raise ValueError(f"state of agent {state.get('agent')!r} cannot be loaded into {self.name!r}")
        self.set_space(self._resolve_space(state["space"]))
        self._next_id = int(state["next_id"])
        self._outstanding = {int(i) for i in state["outstanding"]}
