"""The ask/tell face of a search: keeps up to P evaluations in flight, telling the agent results as they arrive.

One iteration: ask the agent for as many architectures as the core has room for (budget left, dispatcher
slots), register them with the core (:class:`agents.core.SearchCore`: repeats answered from the store, the rest
submitted as one job array), and collect results; the core tells the agent each one inside the transaction that
records it, with the agent checkpoint (weights, optimizer, baseline, RNG states). So ``--resume`` continues
exactly where a killed driver stopped: no finished evaluation is lost or trained again, jobs still running are
reattached, and the agent is exactly as it was at the last committed result.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from agents.base import Agent, Proposal
from agents.core import FACE_STATE, SearchCore, SearchSummary, make_env_parts
from agents.curriculum import DepthCurriculum
from agents.registry import make_agent
from agents.run_dir import RunDir, SearchConfig
from nas_env.results import EvalResult
from nas_env.store import ResultStore
from nas_env.spaces import SearchSpace

#: tensor dtypes that numpy holds exactly (bfloat16 and the like keep torch's own pickling)
_NUMPY_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16,
                           torch.int8, torch.uint8, torch.bool})  # fmt: skip


class _CheckpointPickler(pickle.Pickler):
    """Pickles a plain CPU tensor as the numpy array it views (rebuilt by ``torch.from_numpy``): about ten times
    cheaper than a tensor's own pickling, which matters for an agent that updates, and so saves its weights and
    optimizer state, with every result (``reinforce-tuned``). Loading needs nothing but ``pickle.loads``."""

    def reducer_override(self, obj: Any) -> Any:
        if (type(obj) is torch.Tensor and obj.device.type == "cpu" and obj.layout is torch.strided
                and not obj.requires_grad and obj.dtype in _NUMPY_DTYPES):  # fmt: skip
            return torch.from_numpy, (obj.numpy(),)
        return NotImplemented


def _serialise(value: Any) -> bytes:
    """A checkpoint part as bytes: pickle, several times faster than torch.save's zip container for the small
    parts written with every event, with tensors as numpy arrays (:class:`_CheckpointPickler`)."""
    buffer = io.BytesIO()
    _CheckpointPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


__all__ = ["Search", "SearchSummary", "make_env_parts", "open_search", "run_search"]


def run_search(run_dir: str | Path, config: SearchConfig | None = None, progress: bool = False) -> SearchSummary:
    """Run (or resume) the search of any agent in ``run_dir`` to its end; see :func:`open_search`."""
    search = open_search(run_dir, config, progress=progress)
    try:
        return search.run()
    finally:
        search.close()


def open_search(run_dir: str | Path, config: SearchConfig | None = None, progress: bool = False) -> Any:
    """The search of ``config.agent`` (or of the run directory's config): :class:`Search` for the ask/tell
    agents, :class:`agents.sb3.SB3Search` for the Stable-Baselines3 ones. Every setup check has run when it
    returns; call ``run()`` then ``close()``."""
    from agents.registry import SB3_AGENTS
    from agents.run_dir import RunDir

    agent = (config if config is not None else RunDir(run_dir).read_config()).agent
    if agent in SB3_AGENTS:
        from agents.sb3 import SB3Search

        return SB3Search(run_dir, config, progress=progress)
    return Search(run_dir, config, progress=progress)


class Search:
    """Drive one ask/tell agent against one environment's evaluator until the budget is spent."""

    def __init__(self, run_dir: str | Path, config: SearchConfig | None = None, progress: bool = False) -> None:
        self.core = SearchCore(run_dir, config, progress=progress)
        try:
            self.config = self.core.config
            self.run_dir = self.core.run
            self.base_space = self.core.space
            self.evaluator = self.core.evaluator
            self.curriculum = DepthCurriculum(**self.config.curriculum) if self.config.curriculum else None
            self.agent: Agent = make_agent(
                self.config.agent, self._space_for(0), seed=self.config.seed, **self.config.agent_kwargs
            )
            self._num_asked = 0
            self._saved_versions: dict[str, int] = {}
            self._exhausted = False  # the agent answered an ask with no proposal: nothing left to try
            self._depth: int | None = getattr(self._space_for(0), "num_layers", None)
            self._restore()
            self.core.attach(self)
            self.core.resume()
        except BaseException:
            self.core.close()
            raise

    @property
    def store(self) -> Any:
        return self.core.store

    @property
    def dispatcher(self) -> Any:
        return self.core.dispatcher

    # ------------------------------------------------------------------ public
    def run(self) -> SearchSummary:
        """Search until ``budget`` evaluations are told (or a time budget is spent and nothing is in flight)."""
        core = self.core
        while not core.done():
            if core.room() > 0 and not self._exhausted:
                self._fill()
            if core.num_waiting():
                core.collect()
            elif core.out_of_time() or self._exhausted:
                break
        return self.summary()

    def summary(self, k: int = 5) -> SearchSummary:
        summary = self.core.summary(k)
        summary.exhausted = self._exhausted
        return summary

    def close(self) -> None:
        self.core.close()

    # ------------------------------------------------------------------ the face (called by the core)
    def on_told(self, proposal: Proposal, result: EvalResult) -> dict[str, float]:
        scalars = self.agent.tell(proposal, float(result.reward))
        return {"search/depth": float(self._depth or 0), **scalars}

    def checkpoint(self) -> dict[str, bytes | None]:
        """The agent's parts that changed since they were last saved (None: unchanged), and the loop's counters."""
        parts: dict[str, bytes | None] = {"loop": _serialise({"num_asked": self._num_asked, "depth": self._depth})}
        for name, (version, build) in self.agent.checkpoint_parts().items():
            if version is not None and self._saved_versions.get(name) == version:
                parts[f"agent.{name}"] = None
                continue
            parts[f"agent.{name}"] = _serialise(build())
            if version is not None:
                self._saved_versions[name] = version  # a transaction that fails ends the driver: no rollback here
        return parts

    # ------------------------------------------------------------------ asking
    def _space_for(self, num_asked: int) -> SearchSpace:
        if self.curriculum is None:
            return self.base_space
        if not hasattr(self.base_space, "with_layers"):
            raise ValueError(f"the depth curriculum needs a space with layers, not {type(self.base_space).__name__}")
        return self.base_space.with_layers(self.curriculum.depth(num_asked))  # type: ignore[attr-defined]

    def _fill(self) -> None:
        """Ask for as many architectures as the core has room for, never across a curriculum depth boundary."""
        room = self.core.room()
        while room > 0 and not self.core.out_of_time():
            space = self._space_for(self._num_asked)
            if getattr(space, "num_layers", None) != self._depth:
                self._depth = getattr(space, "num_layers", None)
                self.agent.set_space(space)
                self.core.log(self.core.num_told(), {"search/depth": float(self._depth or 0)})
            n = room
            if self.curriculum is not None:
                n = min(n, self.curriculum.every - self._num_asked % self.curriculum.every)
            proposals = self.agent.ask(n)
            if not proposals:  # the agent has nothing left (an exhausted grid): stop asking, never spin
                self._exhausted = True
                break
            self._num_asked += len(proposals)
            self.core.register(proposals)
            room = self.core.room()

    # ------------------------------------------------------------------ resume
    def _restore(self) -> None:
        blobs = self.core.face_state()
        if not blobs:
            return
        loop = pickle.loads(blobs["loop"])  # our own store's bytes, written by _serialise
        self._num_asked = loop["num_asked"]
        self._depth = loop["depth"]
        self.agent.set_space(self._space_for(max(self._num_asked - 1, 0)))
        parts = {name.removeprefix("agent."): pickle.loads(blob) for name, blob in blobs.items()
                 if name.startswith("agent.")}  # fmt: skip
        self.agent.load_checkpoint_parts(parts)


def load_run_agents(run_dir: str | Path) -> tuple[Agent, Agent] | None:
    """The ask/tell agent of a run twice: as it started (built from ``config.json`` and the seed, so its
    weights are the run's initial ones) and as the last committed checkpoint left it; ``None`` for an agent
    that is not ask/tell (SB3) or a run with no checkpoint yet. Reads the store only; takes no lock."""
    from agents.registry import ASK_TELL_AGENTS
    from nas_env.spaces import space_from_config

    run = RunDir(Path(run_dir))
    config = run.read_config()
    if config.agent not in ASK_TELL_AGENTS:
        return None
    store = ResultStore(run.store_path)
    try:
        blobs = store.load_states(prefix=f"{FACE_STATE}/")
    finally:
        store.close()
    parts = {name.removeprefix("agent."): pickle.loads(blob) for name, blob in blobs.items()
             if name.startswith("agent.")}  # fmt: skip
    if not parts:
        return None
    state = parts.get("rest", parts.get("state", {}))
    space = space_from_config(dict(state["space"]))
    start = make_agent(config.agent, space, seed=config.seed, **config.agent_kwargs)
    end = make_agent(config.agent, space, seed=config.seed, **config.agent_kwargs)
    end.load_checkpoint_parts(parts)
    return start, end
