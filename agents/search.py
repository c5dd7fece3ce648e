"""The asynchronous ask/tell search loop: keeps up to P evaluations in flight, resumable after ``kill -9``.

One iteration: ask the agent for as many architectures as there is room for, answer repeats from the
store, send the rest to the dispatcher (local subprocesses, SLURM jobs or inline), and tell the agent
each result as it arrives. Every result, the agent checkpoint (weights, optimizer, baseline, RNG
states) and the in-flight work live in the run directory's sqlite store, written in one transaction
per event, so the same command with ``--resume`` continues exactly where a killed driver stopped: no
finished evaluation is lost or trained again, and jobs still running are reattached, not resubmitted.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import nas_env  # noqa: F401 - registers the environment ids
from agents.base import Agent, Proposal
from agents.curriculum import DepthCurriculum
from agents.registry import make_agent
from agents.run_dir import RunDir, ScalarLogger, SearchConfig
from nas_env.env import NASEnv
from nas_env.evaluators import Evaluator
from nas_env.results import EvalResult
from nas_env.spaces import SearchSpace, space_from_config
from nas_env.store import ProposalRecord, ResultStore, StoredEvaluation
from slurm.dispatch import Completed, Dispatcher, ExecutorConfig, Task

_CHECKPOINT = "search_checkpoint"


@dataclass
class SearchSummary:
    """What a finished (or interrupted) search reports."""

    run_dir: Path
    evaluations: int
    budget: int
    in_flight: int
    best: list[StoredEvaluation] = field(default_factory=list)
    wall_time_s: float = 0.0
    simulated_time_s: float = 0.0
    out_of_time: bool = False

    @property
    def finished(self) -> bool:
        """The budget (evaluations, or time) is spent and nothing is left in flight."""
        return self.evaluations >= self.budget or (self.out_of_time and self.in_flight == 0)


def make_env_parts(env_id: str, env_kwargs: dict[str, Any]) -> tuple[SearchSpace, Evaluator]:
    """The search space and evaluator behind a registered environment id (the same parts the
    Gymnasium face uses; nothing is copied)."""
    env = gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
    if not isinstance(env, NASEnv):
        raise TypeError(f"{env_id} is not a NASEnv environment")
    return env.space, env.evaluator


def _space_config(space: SearchSpace) -> dict[str, Any]:
    return {"name": space.name, **space.config()}


class Search:
    """Drive one agent against one environment's evaluator until the budget is spent."""

    def __init__(self, run_dir: str | Path, config: SearchConfig | None = None) -> None:
        self.run_dir = RunDir(run_dir)
        if config is None:
            config = self.run_dir.read_config()
        elif self.run_dir.exists() and self.run_dir.read_config() != config:
            raise ValueError(
                f"{self.run_dir.path} already holds a different search; resume it with its own config "
                "(nas search --resume RUN_DIR) or choose a new run directory"
            )
        self.config = config
        self.base_space, self.evaluator = make_env_parts(config.env_id, config.env_kwargs)
        self.fingerprint = self.evaluator.fingerprint()
        self.curriculum = DepthCurriculum(**config.curriculum) if config.curriculum else None
        self.executor_config = ExecutorConfig(**config.executor)
        self.dispatcher = Dispatcher(self.executor_config, self.run_dir.jobs_path)
        self.dispatcher.check()  # a bad cluster setting is an error before anything is submitted
        self.run_dir.write_config(config)
        self.store = ResultStore(self.run_dir.store_path)
        self.agent: Agent = make_agent(config.agent, self._space_for(0), seed=config.seed, **config.agent_kwargs)
        self.logger = ScalarLogger(self.run_dir)
        self._proposals: dict[int, Proposal] = {}  # in flight, by proposal id
        self._waiting: dict[str, list[int]] = {}  # task key -> proposal ids waiting for that evaluation
        self._unsubmitted: list[Task] = []  # tasks waiting for room in the dispatcher
        self._num_asked = 0
        self._elapsed_before = 0.0  # search time spent by earlier driver processes
        self._session_start = time.monotonic()
        self._best = float("-inf")
        self._simulated_s = 0.0  # simulated training time of told results (tabular benchmarks)
        self._depth: int | None = getattr(self._space_for(0), "num_layers", None)
        self._restore()

    # ------------------------------------------------------------------ public
    def run(self, progress: bool = True) -> SearchSummary:
        """Search until ``budget`` evaluations are told (or the wall-time budget is spent)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.config.budget, initial=self.store.num_told(), disable=not progress, unit="eval")
        try:
            while self.store.num_told() < self.config.budget:
                out_of_time = self.out_of_time()
                if not out_of_time:
                    self._fill()
                if self._waiting:
                    for completed in self.dispatcher.wait(timeout=self.executor_config.poll_interval_s):
                        self._on_completed(completed)
                elif out_of_time:
                    break
                bar.n = self.store.num_told()
                bar.set_postfix(best=f"{self._best:.4f}", in_flight=len(self._waiting), depth=self._depth)
                bar.refresh()
        finally:
            bar.close()
            with self.store.transaction():
                self._checkpoint()
        return self.summary()

    def out_of_time(self) -> bool:
        """True once the wall-clock or the simulated-time budget is spent."""
        wall, simulated = self.config.max_wall_time_s, self.config.max_simulated_time_s
        return (wall is not None and self.elapsed_s() >= wall) or (
            simulated is not None and self._simulated_s >= simulated
        )

    def elapsed_s(self) -> float:
        """Search time so far, over every driver process of this run."""
        return self._elapsed_before + time.monotonic() - self._session_start

    def summary(self, k: int = 5) -> SearchSummary:
        return SearchSummary(
            run_dir=self.run_dir.path,
            evaluations=self.store.num_told(),
            budget=self.config.budget,
            in_flight=len(self._waiting),
            best=self.store.best(k, self.fingerprint),
            wall_time_s=self.elapsed_s(),
            simulated_time_s=self._simulated_s,
            out_of_time=self.out_of_time(),
        )

    def close(self) -> None:
        self.logger.close()
        self.store.close()
        self.dispatcher.close()

    # ------------------------------------------------------------------ asking
    def _space_for(self, num_asked: int) -> SearchSpace:
        if self.curriculum is None:
            return self.base_space
        if not hasattr(self.base_space, "with_layers"):
            raise ValueError(f"the depth curriculum needs a space with layers, not {type(self.base_space).__name__}")
        return self.base_space.with_layers(self.curriculum.depth(num_asked))  # type: ignore[attr-defined]

    def _submit(self, tasks: list[Task]) -> None:
        """Queue tasks and send as many as the dispatcher has room for (one job array)."""
        self._unsubmitted += tasks
        n = min(len(self._unsubmitted), self.dispatcher.capacity())
        if n == 0:
            return
        batch, self._unsubmitted = self._unsubmitted[:n], self._unsubmitted[n:]
        job_ids = self.dispatcher.submit(batch)
        self.store.set_job_ids({self._waiting[t.key][0]: job for t, job in zip(batch, job_ids)})

    def _fill(self) -> None:
        """Ask for as many architectures as the dispatcher has room for and the budget allows."""
        self._submit([])  # first, work queued at resume beyond the in-flight cap
        room = min(
            self.dispatcher.capacity(),
            self.config.budget - self.store.num_told() - sum(len(v) for v in self._waiting.values()),
        )
        while room > 0 and not self.out_of_time():
            space = self._space_for(self._num_asked)
            if getattr(space, "num_layers", None) != self._depth:
                self._depth = getattr(space, "num_layers", None)
                self.agent.set_space(space)
                self.logger.log(self.store.num_told(), {"search/depth": float(self._depth or 0)})
            # under a curriculum, never ask across a depth boundary in one batch
            n = room
            if self.curriculum is not None:
                n = min(n, self.curriculum.every - self._num_asked % self.curriculum.every)
            proposals = self.agent.ask(n)
            self._submit(self._register(proposals))
            room -= len(proposals)

    def _register(self, proposals: list[Proposal]) -> list[Task]:
        """Record new proposals and the agent state in one transaction; answer repeats from the store."""
        to_submit: list[Task] = []
        answered: list[tuple[int, EvalResult]] = []
        with self.store.transaction():
            for proposal in proposals:
                pid = proposal.id  # the agent's own id: its checkpoint knows which ids await a reward
                self._num_asked += 1
                record = self._record(pid, proposal)
                self.store.add_proposal(record)
                self._proposals[pid] = proposal
                key = self._task_key(record.arch_key)
                cached = self.store.get_cached(record.arch_key, self.fingerprint)
                if cached is not None:
                    answered.append((pid, cached))
                elif key in self._waiting:
                    self._waiting[key].append(pid)  # the same architecture is already being evaluated
                else:
                    self._waiting[key] = [pid]
                    to_submit.append(Task(key=key, evaluator=self.evaluator, arch=proposal.arch))
            self._checkpoint()
        for pid, result in answered:
            with self.store.transaction():
                self._tell(pid, result, cached=True)
                self._checkpoint()
        return to_submit

    def _record(self, pid: int, proposal: Proposal) -> ProposalRecord:
        return ProposalRecord(
            proposal_id=pid,
            arch_key=proposal.space.key(proposal.arch),
            fingerprint=self.fingerprint,
            arch_json=proposal.arch.to_json(),
            tokens=tuple(proposal.tokens),
            space_config=_space_config(proposal.space),
        )

    def _task_key(self, arch_key: str) -> str:
        return "t" + hashlib.sha1(f"{arch_key}|{self.fingerprint}".encode()).hexdigest()[:20]

    # ------------------------------------------------------------------ telling
    def _on_completed(self, completed: Completed) -> None:
        pids = self._waiting.pop(completed.key, [])
        if not pids:
            return  # a duplicate job from before a crash: its result is already told
        first = self._proposals[pids[0]]
        result = completed.result
        if completed.job_id and result.job_id is None:
            result = result.with_updates(job_id=completed.job_id)
        with self.store.transaction():
            self.store.put(first.space.key(first.arch), self.fingerprint, first.space.name, first.arch.to_json(), result)
            for pid in pids:
                self._tell(pid, result, cached=pid != pids[0])
            self._checkpoint()

    def _tell(self, pid: int, result: EvalResult, cached: bool) -> None:
        proposal = self._proposals.pop(pid)
        seq = self.store.mark_told(pid, result, cached)
        scalars = self.agent.tell(proposal, float(result.reward))
        self._best = max(self._best, float(result.reward))
        self._simulated_s += float(result.extra.get("simulated_train_time_s", 0.0))
        self.logger.log(
            seq,
            {
                "search/reward": result.reward,
                "search/best_reward": self._best,
                "search/in_flight": float(sum(len(v) for v in self._waiting.values())),
                "search/depth": float(self._depth or 0),
                "search/simulated_time_s": self._simulated_s,
                "search/failed": float(not result.ok),
                **scalars,
            },
        )

    # ------------------------------------------------------------------ checkpoint and resume
    def _checkpoint(self) -> None:
        """Save the agent and loop state into the store (call inside a store transaction)."""
        buffer = io.BytesIO()
        torch.save(
            {
                "agent": self.agent.state_dict(),
                "num_asked": self._num_asked,
                "depth": self._depth,
                "elapsed_s": self.elapsed_s(),
                "simulated_s": self._simulated_s,
            },
            buffer,
        )
        self.store.save_state(_CHECKPOINT, buffer.getvalue())

    def _restore(self) -> None:
        blob = self.store.load_state(_CHECKPOINT)
        if blob is None:
            return
        state = torch.load(io.BytesIO(blob), weights_only=False)
        self._num_asked = state["num_asked"]
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self._session_start = time.monotonic()
        self._simulated_s = float(state.get("simulated_s", 0.0))
        self._depth = state["depth"]
        self.agent.set_space(self._space_for(max(self._num_asked - 1, 0)))
        self.agent.load_state_dict(state["agent"])
        told = self.store.told()
        self._best = max((r.reward for r in told if r.reward is not None), default=float("-inf"))
        reattach: dict[str, str] = {}
        to_submit: list[Task] = []
        answered: list[tuple[int, EvalResult]] = []
        for record in self.store.in_flight():
            space = space_from_config(record.space_config)
            arch = space.decode(record.tokens)
            self._proposals[record.proposal_id] = Proposal(record.proposal_id, record.tokens, arch, space)
            key = self._task_key(record.arch_key)
            stored = self.store.get_cached(record.arch_key, record.fingerprint)
            if stored is not None:
                answered.append((record.proposal_id, stored))
                continue
            if key in self._waiting:
                self._waiting[key].append(record.proposal_id)
                continue
            self._waiting[key] = [record.proposal_id]
            # no job id: the driver died between submitting and recording it; a job that started
            # has claimed the task, and one still queued will find the claim of its twin and step aside
            job_id = record.job_id or self.dispatcher.claimed(key)
            if job_id:
                reattach[key] = job_id
            else:
                to_submit.append(Task(key=key, evaluator=self.evaluator, arch=arch))
        for pid, result in answered:
            with self.store.transaction():
                self._tell(pid, result, cached=True)
                self._checkpoint()
        if reattach:
            self.dispatcher.reattach(reattach)
        self._submit(to_submit)
