"""A Stable-Baselines3 ``VecEnv`` over ``n`` copies of :class:`~nas_env.env.NASEnv` whose terminal steps are
evaluated as one batch through the :class:`~slurm.dispatch.Dispatcher`.

Why not ``DummyVecEnv`` or ``SubprocVecEnv``: there every terminal step trains its child synchronously, one
after another (or one per env process), so ``n`` envs finishing together cost ``n`` serial trainings or ``n``
idle processes. Here, in :meth:`BatchedNASVecEnv.step_wait`, the envs whose architecture is complete are
collected, repeats are answered from the run's store, the rest go to the dispatcher in **one**
``submit()`` call (one SLURM job array), and the step returns once every result is back.

Every proposal and result is written to the run's :class:`~nas_env.store.ResultStore` by a
:class:`SearchRecorder`, the way :class:`agents.search.Search` writes them: the proposal when the
architecture is complete, the result with its "told" mark in one transaction the moment it arrives, and
the scalars ``search/reward``, ``search/best_reward``, ... in ``scalars.csv``, so an SB3 run directory
reads like any other run directory (``nas report`` and ``nas compare`` work on it).
"""

from __future__ import annotations

import hashlib
import json
import time
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from agents.run_dir import ScalarLogger
from nas_env.env import NASEnv
from nas_env.results import EvalResult, Status, failure
from nas_env.spaces import space_from_config
from nas_env.spaces.base import Architecture, SearchSpace
from nas_env.store import ProposalRecord, ResultStore
from slurm.dispatch import Completed, Dispatcher, Task

#: name of the recorder's counters in the store's ``state`` table
STATE_NAME = "sb3_search"


def task_key(arch_key: str, fingerprint: str) -> str:
    """The dispatcher key of one evaluation (the same formula as :class:`agents.search.Search`, so the
    checkpoint file of an architecture is the same whichever face submitted it)."""
    return "t" + hashlib.sha1(f"{arch_key}|{fingerprint}".encode()).hexdigest()[:20]


def space_config(space: SearchSpace) -> dict[str, Any]:
    """``{"name": ..., **space.config()}``: how the proposals table stores a space."""
    return {"name": space.name, **space.config()}


# ---------------------------------------------------------------------------------------------- the book
class SearchRecorder:
    """Writes an SB3 search into the run's store and scalar log exactly as :class:`agents.search.Search` does.

    It also owns the search's limits, because the vector env must know them before it dispatches:
    :meth:`remaining` is how many more architectures may be evaluated (the evaluation budget minus the
    told count, 0 once the wall-clock or simulated-time budget is spent). The counters that must survive a
    restart (search time of earlier drivers, simulated training time) are saved in the store's ``state``
    table in the same transaction as each result.
    """

    def __init__(
        self,
        store: ResultStore,
        fingerprint: str,
        logger: ScalarLogger | None = None,
        budget: int | None = None,
        max_wall_time_s: float | None = None,
        max_simulated_time_s: float | None = None,
        depth: int | None = None,
        on_told: Callable[[int, EvalResult], None] | None = None,
    ) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.logger = logger
        self.budget = budget
        self.max_wall_time_s = max_wall_time_s
        self.max_simulated_time_s = max_simulated_time_s
        self.depth = float(depth or 0)
        self.on_told = on_told
        records = store.in_flight() + store.told()
        self._next_id = max((r.proposal_id for r in records), default=0) + 1
        self.best = max((r.reward for r in records if r.reward is not None), default=float("-inf"))
        state = self._load_state()
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self.simulated_s = float(state.get("simulated_s", 0.0))
        self._session_start = time.monotonic()

    # ------------------------------------------------------------------ limits
    def elapsed_s(self) -> float:
        """Search time so far, over every driver process of this run."""
        return self._elapsed_before + time.monotonic() - self._session_start

    def out_of_time(self) -> bool:
        """True once the wall-clock or the simulated-time budget is spent."""
        wall, simulated = self.max_wall_time_s, self.max_simulated_time_s
        return (wall is not None and self.elapsed_s() >= wall) or (
            simulated is not None and self.simulated_s >= simulated
        )

    def num_told(self) -> int:
        return self.store.num_told()

    def remaining(self) -> int:
        """How many more architectures may be evaluated now (a large number when there is no budget)."""
        if self.out_of_time():
            return 0
        if self.budget is None:
            return 1 << 62
        return max(0, self.budget - self.store.num_told())

    # ------------------------------------------------------------------ writing
    def propose(self, space: SearchSpace, items: Sequence[tuple[Sequence[int], Architecture]]) -> list[int]:
        """Register complete architectures (tokens, arch) as proposals in one transaction; their ids."""
        pids = []
        with self.store.transaction():
            for tokens, arch in items:
                pid = self._next_id
                self._next_id += 1
                self.store.add_proposal(
                    ProposalRecord(
                        proposal_id=pid,
                        arch_key=space.key(arch),
                        fingerprint=self.fingerprint,
                        arch_json=arch.to_json(),
                        tokens=tuple(int(t) for t in tokens),
                        space_config=space_config(space),
                    )
                )
                pids.append(pid)
            self._save_state()
        return pids

    def lookup(self, arch_key: str) -> EvalResult | None:
        """The stored result a repeat would reproduce, if any (see ``nas_env.store.CACHEABLE``)."""
        return self.store.get_cached(arch_key, self.fingerprint)

    def set_job_ids(self, job_ids: dict[int, str]) -> None:
        """Remember the job of each proposal, so a restarted driver reattaches instead of resubmitting."""
        if job_ids:
            self.store.set_job_ids(job_ids)

    def tell(
        self,
        pids: Sequence[int],
        space: SearchSpace,
        arch: Architecture,
        result: EvalResult,
        fresh: bool,
        in_flight: int = 0,
    ) -> list[int]:
        """Record one result for the proposals ``pids`` (all the same architecture) in one transaction.

        ``fresh``: the result was just evaluated (it is put into the evaluations table, and the first
        proposal is told ``cached=False``); otherwise it came from the store. Returns the told sequence
        numbers, which are also the x-axis of the logged scalars.
        """
        with self.store.transaction():
            if fresh:
                self.store.put(space.key(arch), self.fingerprint, space.name, arch.to_json(), result)
            seqs = [self.store.mark_told(pid, result, cached=not fresh or j > 0) for j, pid in enumerate(pids)]
            self.simulated_s += len(pids) * float(result.extra.get("simulated_train_time_s", 0.0))
            self.best = max(self.best, float(result.reward))
            self._save_state()
        for seq in seqs:
            self._log(seq, result, in_flight)
        return seqs

    def save(self) -> None:
        """Persist the counters (search time, simulated time) now."""
        with self.store.transaction():
            self._save_state()

    # ------------------------------------------------------------------ helpers
    def _log(self, seq: int, result: EvalResult, in_flight: int) -> None:
        if self.logger is not None:
            self.logger.log(
                seq,
                {
                    "search/reward": result.reward,
                    "search/best_reward": self.best,
                    "search/in_flight": float(in_flight),
                    "search/depth": self.depth,
                    "search/simulated_time_s": self.simulated_s,
                    "search/failed": float(not result.ok),
                },
            )
        if self.on_told is not None:
            self.on_told(seq, result)

    def _save_state(self) -> None:
        state = {"elapsed_s": self.elapsed_s(), "simulated_s": self.simulated_s}
        self.store.save_state(STATE_NAME, json.dumps(state).encode())

    def _load_state(self) -> dict[str, Any]:
        blob = self.store.load_state(STATE_NAME)
        return {} if blob is None else dict(json.loads(blob.decode()))


# ---------------------------------------------------------------------------------------------- the vec env
def make_nas_envs(env_id: str, env_kwargs: dict[str, Any], n_envs: int) -> list[NASEnv]:
    """``n_envs`` copies of a registered NAS environment sharing one space and one evaluator (built once with
    ``gym.make(env_id, **env_kwargs)``). The copies keep no store of their own: the recorder writes it."""
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    first = gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
    if not isinstance(first, NASEnv):
        raise TypeError(f"{env_id} is not a NASEnv environment")
    first.store = None
    return [first] + [
        NASEnv(first.space, first.evaluator, store=None, invalid_action=first.invalid_action)
        for _ in range(n_envs - 1)
    ]


@dataclass
class _Group:
    """The proposals of one batch that share an architecture: evaluated once, told to all."""

    arch: Architecture
    envs: list[int] = field(default_factory=list)  # env indices (-1: a proposal left by an earlier driver)
    pids: list[int] = field(default_factory=list)
    result: EvalResult | None = None


class BatchedNASVecEnv(DummyVecEnv):
    """``n`` NASEnv copies in lock-step; the terminal steps of one ``step()`` are evaluated as one batch.

    - ``step_async(actions)`` stores the actions; ``step_wait()`` applies one token per env. Envs that are
      not at their last token step as usual (reward 0). The envs whose architecture is now complete are
      registered as proposals, answered from the store when it already holds their result, and the others
      (one task per distinct architecture) go to ``dispatcher.submit()`` in one call (several only if the
      batch exceeds ``dispatcher.capacity()``); the step then waits until every result is back, telling
      each to the store the moment it arrives.
    - Auto-reset as SB3 expects: a terminal env's info holds ``terminal_observation`` (and NASEnv's
      ``architecture``, ``arch_key``, ``result``, ``cached``, plus ``proposal_id``, ``evaluated`` and the
      Monitor-style ``episode`` record that SB3 logs as ``rollout/ep_rew_mean``) and the returned
      observation is the first one of the next episode.
    - :meth:`action_masks` (and ``env_method("action_masks")``) give one mask per env for MaskablePPO.
    - Budget: when fewer evaluations remain than envs finished (``recorder.remaining()``), the extra
      architectures are not evaluated nor recorded; they end with a NOT_STARTED result of reward
      ``failure_reward`` and ``info["evaluated"] = False``. Training stops on that step (see
      :class:`agents.sb3.BudgetCallback`), so these rewards never reach a gradient.

    All envs must share one search space and one evaluator (build them with :meth:`from_env_id`).
    """

    def __init__(self, envs: Sequence[NASEnv], dispatcher: Dispatcher, recorder: SearchRecorder) -> None:
        envs = list(envs)
        if not envs:
            raise ValueError("BatchedNASVecEnv needs at least one env")
        for env in envs:
            if not isinstance(env, NASEnv):
                raise TypeError(f"BatchedNASVecEnv needs unwrapped NASEnv instances, got {type(env).__name__}")
        space = envs[0].space
        if any(e.evaluator.fingerprint() != envs[0].evaluator.fingerprint() for e in envs):
            raise ValueError("all envs of a BatchedNASVecEnv must share one evaluator")
        if any(space_config(e.space) != space_config(space) for e in envs):
            raise ValueError("all envs of a BatchedNASVecEnv must share one search space")
        super().__init__([lambda env=env: env for env in envs])
        self.nas_envs: list[NASEnv] = envs
        self.space: SearchSpace = space
        self.evaluator = envs[0].evaluator
        self.dispatcher = dispatcher
        self.recorder = recorder
        #: ``dispatcher.submit`` calls made by this env so far (one per step with new architectures)
        self.submit_calls = 0

    @classmethod
    def from_env_id(
        cls, env_id: str, env_kwargs: dict[str, Any], n_envs: int, dispatcher: Dispatcher, recorder: SearchRecorder
    ) -> "BatchedNASVecEnv":
        """``n_envs`` copies of a registered NAS environment (see :func:`make_nas_envs`)."""
        return cls(make_nas_envs(env_id, env_kwargs, n_envs), dispatcher, recorder)

    # ------------------------------------------------------------------ SB3 VecEnv API
    def step_wait(self) -> VecEnvStepReturn:
        terminal: list[int] = []
        for i, env in enumerate(self.nas_envs):
            if len(env.tokens) == self.space.num_steps - 1:
                env.apply_token(self.actions[i])  # the last token: evaluated below, with the others
                terminal.append(i)
            else:
                obs, reward, terminated, truncated, info = env.step(self.actions[i])
                self._store_step(i, obs, float(reward), terminated or truncated, info)
        if terminal:
            self._finish_batch(terminal)
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), deepcopy(self.buf_infos)

    def action_masks(self) -> np.ndarray:
        """``(n_envs, max_choices)`` boolean masks of the valid tokens of each env's current decision."""
        return np.stack([env.action_masks() for env in self.nas_envs])

    def settle_in_flight(self) -> int:
        """Finish the proposals an earlier (killed) driver left in flight: answer them from the store,
        reattach to their jobs, or resubmit them, and tell their results. The policy that asked for them
        is gone, so no env sees them; they count toward the budget like every told proposal. Returns how
        many were settled."""
        records = self.recorder.store.in_flight()
        groups: dict[str, _Group] = {}
        reattach: dict[str, str] = {}
        for record in records:
            space = space_from_config(record.space_config)
            arch = space.decode(record.tokens)
            stored = self.recorder.lookup(record.arch_key)
            if stored is not None:
                self.recorder.tell([record.proposal_id], space, arch, stored, fresh=False)
                continue
            key = task_key(record.arch_key, self.recorder.fingerprint)
            group = groups.setdefault(key, _Group(arch=arch))
            group.envs.append(-1)
            group.pids.append(record.proposal_id)
            # no job id: the driver died between submitting and recording it; the job's claim names it
            job_id = record.job_id or (None if key in reattach else self.dispatcher.claimed(key))
            if job_id and key not in reattach:
                reattach[key] = job_id
        if reattach:
            self.dispatcher.reattach(reattach)
        self._dispatch(groups, already_running=set(reattach))
        return len(records)

    # ------------------------------------------------------------------ one batch of terminal steps
    def _finish_batch(self, terminal: list[int]) -> None:
        """Evaluate the complete architectures of ``terminal`` envs (within the budget) and close their episodes."""
        allowed = terminal[: self.recorder.remaining()]
        archs = {i: self.nas_envs[i].pending_architecture() for i in terminal}
        outcomes = self._evaluate({i: archs[i] for i in allowed})
        for i in terminal:
            env = self.nas_envs[i]
            if i in outcomes:
                result, cached, pid = outcomes[i]
                obs, reward, terminated, truncated, info = env.finish(archs[i], result, cached)
                info.update(proposal_id=pid, evaluated=True)
                # what a Monitor wrapper would add: SB3 logs rollout/ep_rew_mean from it
                info["episode"] = {"r": float(reward), "l": self.space.num_steps, "t": self.recorder.elapsed_s()}
            else:
                result = failure(
                    Status.NOT_STARTED,
                    error="not evaluated: the search budget is spent",
                    reward=env.evaluator.failure_reward,
                )
                obs, reward, terminated, truncated, info = env.finish(archs[i], result, False)
                info.update(proposal_id=None, evaluated=False)
            self._store_step(i, obs, float(reward), True, info)

    def _evaluate(self, archs: dict[int, Architecture]) -> dict[int, tuple[EvalResult, bool, int]]:
        """Register, answer from the store or dispatch, and tell: ``env index -> (result, cached, proposal id)``."""
        if not archs:
            return {}
        order = list(archs)
        pids = self.recorder.propose(self.space, [(self.nas_envs[i].tokens, archs[i]) for i in order])
        outcomes: dict[int, tuple[EvalResult, bool, int]] = {}
        groups: dict[str, _Group] = {}
        for i, pid in zip(order, pids):
            arch_key = self.space.key(archs[i])
            stored = self.recorder.lookup(arch_key)
            if stored is not None:
                self.recorder.tell([pid], self.space, archs[i], stored, fresh=False)
                outcomes[i] = (stored, True, pid)
                continue
            group = groups.setdefault(task_key(arch_key, self.recorder.fingerprint), _Group(arch=archs[i]))
            group.envs.append(i)
            group.pids.append(pid)
        self._dispatch(groups)
        for group in groups.values():
            assert group.result is not None
            for j, (i, pid) in enumerate(zip(group.envs, group.pids)):
                outcomes[i] = (group.result, j > 0, pid)
        return outcomes

    def _dispatch(self, groups: dict[str, _Group], already_running: frozenset[str] | set[str] = frozenset()) -> None:
        """Submit one task per group (one ``submit`` call while the batch fits the dispatcher's capacity),
        then collect until every group has its result, telling each result as it arrives."""
        queue = [key for key in groups if key not in already_running]
        pending = set(already_running)
        poll_s = float(self.dispatcher.config.poll_interval_s)
        while queue or pending:
            room = self.dispatcher.capacity()
            if queue and room > 0:
                batch, queue = queue[:room], queue[room:]
                tasks = [Task(key=key, evaluator=self.evaluator, arch=groups[key].arch) for key in batch]
                job_ids = self.dispatcher.submit(tasks)
                self.submit_calls += 1
                self.recorder.set_job_ids({groups[k].pids[0]: job for k, job in zip(batch, job_ids)})
                pending.update(batch)
            for completed in self.dispatcher.wait(timeout=poll_s):
                if completed.key in pending:
                    pending.discard(completed.key)
                    self._on_completed(groups[completed.key], completed, in_flight=len(pending) + len(queue))

    def _on_completed(self, group: _Group, completed: Completed, in_flight: int) -> None:
        """Tell one arrived result to the store (one transaction) and keep it for the group's envs."""
        result = completed.result
        if completed.job_id and result.job_id is None:
            result = result.with_updates(job_id=completed.job_id)
        group.result = result
        self.recorder.tell(group.pids, self.space, group.arch, result, fresh=True, in_flight=in_flight)

    def _store_step(self, i: int, obs: dict[str, Any], reward: float, done: bool, info: dict[str, Any]) -> None:
        """Write one env's step into the buffers; on ``done`` keep the terminal observation and reset (SB3 API)."""
        self.buf_rews[i] = reward
        self.buf_dones[i] = done
        info["TimeLimit.truncated"] = False
        if done:
            info["terminal_observation"] = obs
            obs, self.reset_infos[i] = self.nas_envs[i].reset()
        self.buf_infos[i] = info
        self._save_obs(i, obs)
