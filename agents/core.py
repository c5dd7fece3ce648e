"""The search core: the one ledger of a search, whatever drives it.

Both faces use it: the ask/tell loop (:class:`agents.search.Search`) and the Gymnasium/SB3 vector env
(:func:`agents.sb3.run_sb3_search`, through :meth:`SearchCore.evaluate_batch`). It owns everything that must
agree between them:

- **set-up, before any child is submitted**: the run directory's one-driver lock, the resume rule
  (:meth:`agents.run_dir.RunDir.resolve_config`), the env's kwargs, the evaluator's ``prepare()`` (dataset
  read and verified once, device present), the executor's checks, the store's integrity;
- **proposals**: registered in the store, repeats answered from it, identical architectures in flight merged
  into one evaluation, tasks submitted within the dispatcher's capacity as one job array;
- **events**: every result is written in one transaction with its "told" marks, the face's state (the agent
  checkpoint) and the core's counters, then logged (``scalars.csv``, TensorBoard) and shown on the progress
  bar. A result with status ``setup_error`` (a node without the data) stops the search with its message;
  the same status from a job an earlier driver submitted gets the child a fresh job instead (that driver's
  setup is not this one's, which passed its checks), so a resume after fixing the setup goes on;
- **limits**: evaluations, wall time over every driver of the run, simulated training time;
- **resume**: in-flight proposals are answered from the store, reattached to their jobs (by recorded id or by
  the job's claim) or submitted again;
- the **summary**.

The commit protocol (why no instant of a crash loses or repeats work) is stated in ``docs/architecture.md``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import gymnasium as gym

import nas_env  # noqa: F401 - registers the environment ids
from agents.base import Proposal
from agents.interrupts import GracefulStop
from agents.run_dir import RunDir, RunDirError, ScalarLogger, SearchConfig
from nas_env.crash_points import crash_point
from nas_env.env import NASEnv
from nas_env.errors import SetupError
from nas_env.evaluators import Evaluator
from nas_env.results import EvalResult, Status, failure
from nas_env.spaces import SearchSpace, space_from_config
from nas_env.spaces.base import Architecture
from nas_env.store import ProposalRecord, ResultStore, StoredEvaluation
from slurm.dispatch import Completed, Dispatcher, ExecutorConfig, Task

#: the core's counters in the store's ``state`` table
CORE_STATE = "search_core"


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
    workers: int = 1
    busy_worker_s: float = 0.0  # worker time the told evaluations occupied (their wall_time_s)
    driver_cpu_ms_per_child: float | None = None  # this driver process's CPU per result it told
    virtual_clock: bool = False  # wall_time_s is the simulated executor's virtual time

    @property
    def utilization(self) -> float:
        """Busy worker time / available worker time (workers x makespan)."""
        available = self.workers * self.wall_time_s
        return self.busy_worker_s / available if available > 0 else 0.0
    exhausted: bool = False  # the agent had nothing left to propose (set by the ask/tell face)

    @property
    def finished(self) -> bool:
        """The budget (evaluations, or time) is spent, or the agent has nothing left to propose, and nothing
        is left in flight."""
        return self.evaluations >= self.budget or ((self.out_of_time or self.exhausted) and self.in_flight == 0)


class Face(Protocol):
    """What drives the core: told each result inside the result's transaction, and checkpointed with it."""

    def on_told(self, proposal: Proposal, result: EvalResult) -> dict[str, float]:
        """The result of ``proposal`` (inside the event's transaction); returns scalars to log with it."""

    def checkpoint(self) -> dict[str, bytes | None]:
        """The face's state to save in the same transaction, as named blobs (None: unchanged since saved)."""


class _SilentFace:
    def on_told(self, proposal: Proposal, result: EvalResult) -> dict[str, float]:
        return {}

    def checkpoint(self) -> dict[str, bytes | None]:
        return {}


def make_env_parts(env_id: str, env_kwargs: dict[str, Any]) -> tuple[SearchSpace, Evaluator, NASEnv]:
    """The search space, evaluator and env of a registered id (``gym.make``: its kwargs are checked there)."""
    env = gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
    if not isinstance(env, NASEnv):
        raise ValueError(f"{env_id} is not a NASEnv environment")
    return env.space, env.evaluator, env


def task_key(arch_key: str, fingerprint: str) -> str:
    """The dispatcher key of one evaluation (also names its checkpoint and claim files)."""
    return "t" + hashlib.sha1(f"{arch_key}|{fingerprint}".encode()).hexdigest()[:20]


def _space_config(space: SearchSpace) -> dict[str, Any]:
    return {"name": space.name, **space.config()}


class SearchCore:
    """One run directory's ledger; see the module docstring. Close it (or use it as a context manager)."""

    def __init__(self, run_dir: str | Path, config: SearchConfig | None = None, progress: bool = False) -> None:
        self.run = RunDir(run_dir)
        created = not self.run.path.exists()
        self.config = self.run.resolve_config(config)
        self._lock = self.run.lock()
        self.store: ResultStore | None = None
        self.dispatcher: Dispatcher | None = None
        self.logger: ScalarLogger | None = None
        try:
            if self.run.store_path.exists():
                self.store = ResultStore(self.run.store_path)  # a damaged store is named before anything else
                self._check_budget(self.store.num_told())
            self.space, self.evaluator, self.env = make_env_parts(self.config.env_id, self.config.env_kwargs)
            self.fingerprint = self.evaluator.fingerprint()
            self.executor_config = ExecutorConfig(**self.config.executor)
            # the dataset read and verified once, here, not in every child; the device where children run here
            self.evaluator.prepare(check_device=self.executor_config.executor != "slurm")
            self.dispatcher = Dispatcher(self.executor_config, self.run.jobs_path)
            self.dispatcher.check()  # a bad cluster setting is an error before anything is submitted
            if self.store is None:
                self.store = ResultStore(self.run.store_path)
            self.run.write_config(self.config)
            self.logger = ScalarLogger(self.run)
        except BaseException:
            self._close_parts()
            if created:
                shutil.rmtree(self.run.path, ignore_errors=True)  # a refused new run leaves nothing behind
            raise
        self.face: Face = _SilentFace()
        #: called with the told count after each committed event (e.g. the CLI's live report); keep them quick
        self.on_told_callbacks: list[Callable[[int], None]] = []
        self.stop = GracefulStop()
        self.stop.install()
        self._proposals: dict[int, Proposal] = {}  # in flight, by proposal id
        self._waiting: dict[str, list[int]] = {}  # task key -> proposal ids waiting for that evaluation
        self._unsubmitted: list[Task] = []  # tasks waiting for room in the dispatcher
        self._evaluators: dict[int, Evaluator] = {}  # the evaluator of each proposal in flight
        self._awaited: set[int] = set()  # proposals whose result evaluate_batch returns to its caller
        self._answers: dict[int, tuple[EvalResult, bool]] = {}  # their told results, until it does
        self._reattached: set[str] = set()  # task keys whose jobs an earlier driver submitted
        records = self.store.in_flight() + self.store.told()
        self._told = self.store.num_told()
        self._next_id = max((r.proposal_id for r in records), default=0) + 1
        self.best = max((r.reward for r in records if r.reward is not None), default=float("-inf"))
        state = self._load_state()
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self.simulated_s = float(state.get("simulated_s", 0.0))
        self.busy_s = float(state.get("busy_s", 0.0))
        self.dispatcher.set_clock(float(state.get("clock", 0.0)))  # the simulated executor's virtual time
        self._session_start = time.monotonic()
        self._cpu_start, self._told_at_start = time.process_time(), self._told
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.config.budget, initial=self.store.num_told(), unit="eval")

    # ------------------------------------------------------------------ set-up helpers
    def _check_budget(self, told: int) -> None:
        if self.config.budget < told:
            raise RunDirError(
                f"{self.run.path} has already told {told} evaluations; a budget of {self.config.budget} is below "
                f"that (give --budget {told} or more to go on)"
            )

    def attach(self, face: Face) -> None:
        """Let ``face`` be told each result and checkpointed with it (call before :meth:`resume`)."""
        self.face = face

    # ------------------------------------------------------------------ limits
    def elapsed_s(self) -> float:
        """Search time so far, over every driver process of this run (the virtual clock's time on the
        simulated executor, which keeps its clock across drivers)."""
        if self.dispatcher is not None and self.dispatcher.virtual:
            return self.dispatcher.clock()
        return self._elapsed_before + time.monotonic() - self._session_start

    def out_of_time(self) -> bool:
        """True once the wall-clock or the simulated-time budget is spent."""
        wall, simulated = self.config.max_wall_time_s, self.config.max_simulated_time_s
        return (wall is not None and self.elapsed_s() >= wall) or (
            simulated is not None and self.simulated_s >= simulated
        )

    def num_told(self) -> int:
        """Results told so far (kept in step with the store's count by every committed event)."""
        return self._told

    def num_waiting(self) -> int:
        """Proposals registered and not told yet."""
        return len(self._proposals)

    def room(self) -> int:
        """How many more proposals may be registered now: the budget left and the dispatcher's free slots."""
        if self.out_of_time():
            return 0
        budget_left = self.config.budget - self.num_told() - self.num_waiting()
        return max(0, min(budget_left, self.dispatcher.capacity() - len(self._unsubmitted)))  # type: ignore[union-attr]

    def remaining(self) -> int:
        """How many more architectures may be evaluated (0 once a time budget is spent)."""
        if self.out_of_time():
            return 0
        return max(0, self.config.budget - self.num_told() - self.num_waiting())

    def in_flight(self) -> list[Proposal]:
        """The proposals registered (or resumed) and not told yet."""
        return list(self._proposals.values())

    def evaluator_of(self, proposal_id: int) -> Evaluator:
        """The evaluator that scores a proposal in flight."""
        return self._evaluators[proposal_id]

    def done(self) -> bool:
        """The budget is told, or time is out and nothing is left in flight."""
        return self.num_told() >= self.config.budget or (self.out_of_time() and not self._waiting)

    # ------------------------------------------------------------------ proposals
    def new_proposal(self, tokens: Sequence[int], arch: Architecture, space: SearchSpace) -> Proposal:
        """A proposal with the next free id (for faces, like SB3's, that have no ids of their own)."""
        proposal = Proposal(self._next_id, tuple(int(t) for t in tokens), arch, space)
        self._next_id += 1
        return proposal

    def register(self, proposals: Sequence[Proposal], evaluator: Evaluator | None = None) -> None:
        """Record new proposals with the face's state in one transaction; answer repeats from the store,
        merge architectures already in flight, and submit the rest as far as the dispatcher has room.

        ``evaluator``: scores these proposals instead of the env's own (``nas retrain`` registers each
        architecture once per grid point); its fingerprint keys their results."""
        store = self.store
        assert store is not None
        evaluator = evaluator or self.evaluator
        fingerprint = evaluator.fingerprint()
        to_submit: list[Task] = []
        answered: list[tuple[int, EvalResult]] = []
        with self.stop.critical(), store.transaction():
            for proposal in proposals:
                record = self._record(proposal, fingerprint)
                store.add_proposal(record)
                self._next_id = max(self._next_id, proposal.id + 1)
                self._proposals[proposal.id] = proposal
                self._evaluators[proposal.id] = evaluator
                key = task_key(record.arch_key, fingerprint)
                cached = store.get_cached(record.arch_key, fingerprint)
                if cached is not None:
                    answered.append((proposal.id, cached))
                elif key in self._waiting:
                    self._waiting[key].append(proposal.id)  # the same architecture is already being evaluated
                else:
                    self._waiting[key] = [proposal.id]
                    to_submit.append(Task(key=key, evaluator=evaluator, arch=proposal.arch))
            self._save(face=True)
        for pid, result in answered:
            self._event([pid], result, fresh=False)
        self._unsubmitted += to_submit
        self.submit_ready()

    def submit_ready(self) -> None:
        """Send queued tasks, as many as the dispatcher has room for, as one job array; record their job ids."""
        n = min(len(self._unsubmitted), self.dispatcher.capacity())  # type: ignore[union-attr]
        if n == 0:
            return
        batch, self._unsubmitted = self._unsubmitted[:n], self._unsubmitted[n:]
        with self.stop.critical():
            job_ids = self.dispatcher.submit(batch)  # type: ignore[union-attr]
            crash_point("dispatch.submitted")  # a kill here: the jobs' claims let a resume find them
            with self.store.transaction():  # type: ignore[union-attr]
                self.store.set_job_ids({self._waiting[t.key][0]: job for t, job in zip(batch, job_ids)})  # type: ignore[union-attr]

    def _record(self, proposal: Proposal, fingerprint: str | None = None) -> ProposalRecord:
        return ProposalRecord(
            proposal_id=proposal.id,
            arch_key=proposal.space.key(proposal.arch),
            fingerprint=fingerprint or self.fingerprint,
            arch_json=proposal.arch.to_json(),
            tokens=tuple(int(t) for t in proposal.tokens),
            space_config=_space_config(proposal.space),
        )

    # ------------------------------------------------------------------ results
    def collect(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` s for results and record each as one event; returns how many arrived."""
        if not self._waiting:
            return 0
        if timeout is None:
            timeout = float(self.executor_config.poll_interval_s)
        completed = self.dispatcher.wait(timeout=timeout)  # type: ignore[union-attr]
        for done in completed:
            self._on_completed(done)
        self.submit_ready()
        return len(completed)

    def drain(self) -> None:
        """Collect until nothing registered is waiting for its result."""
        while self._waiting:
            self.collect()

    def _on_completed(self, completed: Completed) -> None:
        pids = self._waiting.get(completed.key)
        if not pids:
            return  # a duplicate job from before a crash: its result is already told
        result = completed.result
        reattached = completed.key in self._reattached
        self._reattached.discard(completed.key)
        if result.status is Status.SETUP and reattached:
            # the job of an earlier driver met the setup that stopped that driver (e.g. a node without the
            # data); this driver's setup passed its checks, so the child gets a fresh job, whose own setup
            # error (the setup still broken) stops the search
            first = self._proposals[pids[0]]
            self._unsubmitted.append(Task(key=completed.key, evaluator=self._evaluators[pids[0]], arch=first.arch))
            return
        if result.status is Status.SETUP:
            first_line = (result.error or "").strip().splitlines()[-1:] or ["setup error"]
            raise SetupError(
                f"a child could not start on its worker (job {completed.job_id}): {first_line[0].rstrip('.')}; the search "
                "stopped, fix the setup and run --resume"
            )
        del self._waiting[completed.key]
        if completed.job_id and result.job_id is None:
            result = result.with_updates(job_id=completed.job_id)
        self._event(pids, result, fresh=True)

    def _event(self, pids: list[int], result: EvalResult, fresh: bool) -> None:
        """One result told to the proposals ``pids`` (one architecture): one transaction, then the logs."""
        store = self.store
        assert store is not None
        first = self._proposals[pids[0]]
        fingerprint = self._evaluators[pids[0]].fingerprint()
        told: list[tuple[int, dict[str, float]]] = []
        with self.stop.critical(), store.transaction():
            if fresh:
                store.put(first.space.key(first.arch), fingerprint, first.space.name, first.arch.to_json(), result)
            for j, pid in enumerate(pids):
                cached = not fresh or j > 0
                seq = store.mark_told(pid, result, cached)
                scalars = self.face.on_told(self._proposals[pid], result)
                crash_point("agent.told")
                told.append((seq, scalars))
                if pid in self._awaited:
                    self._answers[pid] = (result, cached)
            self.simulated_s += len(pids) * float(result.extra.get("simulated_train_time_s", 0.0))
            if fresh:
                self.busy_s += float(result.wall_time_s)
            self._save(face=True)
        # committed: only now does the in-memory bookkeeping move on
        self._told += len(pids)
        for pid in pids:
            self._proposals.pop(pid)
            self._evaluators.pop(pid)
        self.best = max(self.best, float(result.reward))
        for seq, scalars in told:
            self.log(
                seq,
                {
                    "search/reward": result.reward,
                    "search/best_reward": self.best,
                    "search/in_flight": float(self.num_waiting()),
                    "search/simulated_time_s": self.simulated_s,
                    "search/failed": float(not result.ok),
                    **scalars,
                },
            )
        if self._bar is not None:
            self._bar.n = self.num_told()
            self._bar.set_postfix(best=f"{self.best:.4g}", in_flight=self.num_waiting(), refresh=False)
            self._bar.refresh()
        for callback in self.on_told_callbacks:
            callback(self.num_told())

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Named scalars at ``step`` (the told sequence number) to ``scalars.csv`` and TensorBoard."""
        virtual = self.dispatcher is not None and self.dispatcher.virtual
        self.logger.log(step, scalars, when=self.elapsed_s() if virtual else None)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ the vector env's batches
    def evaluate_batch(
        self, space: SearchSpace, items: Sequence[tuple[tuple[int, ...], Architecture]]
    ) -> list[tuple[EvalResult, bool]]:
        """Evaluate complete architectures (a vector env's terminal steps) through the ledger, blocking until
        all are told: repeats from the store, the rest as one job array. Architectures past the budget are not
        evaluated nor recorded; they get a NOT_STARTED result with the evaluator's failure reward."""
        allowed = min(len(items), self.remaining())
        proposals = [self.new_proposal(tokens, arch, space) for tokens, arch in items[:allowed]]
        self._awaited.update(p.id for p in proposals)
        self.register(proposals)
        while any(p.id not in self._answers for p in proposals):
            self.collect()
        out = [self._answers.pop(p.id) for p in proposals]
        self._awaited.difference_update(p.id for p in proposals)
        spent = failure(Status.NOT_STARTED, error="not evaluated: the search budget is spent",
                        reward=self.evaluator.failure_reward)  # fmt: skip
        return out + [(spent, False)] * (len(items) - allowed)

    # ------------------------------------------------------------------ resume
    def resume(self, evaluators: Sequence[Evaluator] = ()) -> list[Proposal]:
        """Take over the proposals an earlier driver left in flight: answer them from the store, reattach to
        their jobs (recorded id, or the claim of a job that started), or submit them again. Returns them.

        ``evaluators``: those registered with :meth:`register` besides the env's own, found by fingerprint;
        a proposal whose evaluator is not among them stays in flight, untouched."""
        store = self.store
        assert store is not None
        by_fingerprint = {e.fingerprint(): e for e in (self.evaluator, *evaluators)}
        reattach: dict[str, str] = {}
        answered: list[tuple[int, EvalResult]] = []
        resumed: list[Proposal] = []
        for record in store.in_flight():
            evaluator = by_fingerprint.get(record.fingerprint)
            if evaluator is None:
                continue
            space = space_from_config(record.space_config)
            proposal = Proposal(record.proposal_id, record.tokens, space.decode(record.tokens), space)
            self._proposals[proposal.id] = proposal
            self._evaluators[proposal.id] = evaluator
            resumed.append(proposal)
            key = task_key(record.arch_key, record.fingerprint)
            stored = store.get_cached(record.arch_key, record.fingerprint)
            if stored is not None:
                answered.append((proposal.id, stored))
            elif key in self._waiting:
                self._waiting[key].append(proposal.id)
            else:
                self._waiting[key] = [proposal.id]
                # no job id: the driver died between submitting and recording it; a job that started has
                # claimed the task, and one still queued will find the claim of its twin and step aside
                job_id = record.job_id or self.dispatcher.claimed(key)  # type: ignore[union-attr]
                if job_id:
                    reattach[key] = job_id
                else:
                    self._unsubmitted.append(Task(key=key, evaluator=evaluator, arch=proposal.arch))
        for pid, result in answered:
            self._event([pid], result, fresh=False)
        if reattach:
            self._reattached.update(reattach)
            self.dispatcher.reattach(reattach)  # type: ignore[union-attr]
        self.submit_ready()
        return resumed

    # ------------------------------------------------------------------ state
    def _save(self, face: bool) -> None:
        """The core's counters (and the face's checkpoint) into the open transaction."""
        state = {"elapsed_s": self.elapsed_s(), "simulated_s": self.simulated_s, "busy_s": self.busy_s}
        if self.dispatcher is not None and self.dispatcher.virtual:
            state["clock"] = self.dispatcher.clock()
        self.store.save_state(CORE_STATE, json.dumps(state).encode())  # type: ignore[union-attr]
        if face:
            parts = self.face.checkpoint()
            crash_point("agent.checkpoint")
            for name, blob in parts.items():
                if blob is not None:
                    self.store.save_state(f"{FACE_STATE}/{name}", blob)  # type: ignore[union-attr]

    def face_state(self) -> dict[str, bytes]:
        """The face's checkpoint as of the last committed event, by part name (empty for a new run)."""
        return self.store.load_states(prefix=f"{FACE_STATE}/")  # type: ignore[union-attr]

    def _load_state(self) -> dict[str, Any]:
        blob = self.store.load_state(CORE_STATE)  # type: ignore[union-attr]
        return {} if blob is None else dict(json.loads(blob.decode()))

    def summary(self, k: int = 5) -> SearchSummary:
        told_here = self.num_told() - self._told_at_start
        cpu_ms = 1000 * (time.process_time() - self._cpu_start) / told_here if told_here else None
        return SearchSummary(
            workers=int(self.executor_config.max_in_flight),
            busy_worker_s=self.busy_s,
            driver_cpu_ms_per_child=cpu_ms,
            virtual_clock=bool(self.dispatcher is not None and self.dispatcher.virtual),
            run_dir=self.run.path,
            evaluations=self.num_told(),
            budget=self.config.budget,
            in_flight=self.num_waiting(),
            best=self.store.best(k, self.fingerprint),  # type: ignore[union-attr]
            wall_time_s=self.elapsed_s(),
            simulated_time_s=self.simulated_s,
            out_of_time=self.out_of_time(),
        )

    def close(self) -> None:
        """Save the counters (not the face: it is saved with every event), stop watching jobs (they keep
        running; a resume reattaches), release the run directory."""
        try:
            if self.store is not None:
                with self.stop.critical(), self.store.transaction():
                    self._save(face=False)
        finally:
            if self._bar is not None:
                self._bar.close()
            self.stop.uninstall()
            self._close_parts()

    def _close_parts(self) -> None:
        for part in (self.logger, self.store, self.dispatcher):
            if part is not None:
                part.close()
        self.logger = self.store = self.dispatcher = None  # type: ignore[assignment]
        self._lock.release()

    def __enter__(self) -> "SearchCore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: the face's checkpoint (the ask/tell agent's) in the store's ``state`` table
FACE_STATE = "search_checkpoint"
