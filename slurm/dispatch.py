"""Dispatch child evaluations as jobs (local subprocesses, SLURM job arrays, or inline) and collect results.

The search loop submits :class:`Task` s, polls for :class:`Completed` results, and may be killed and
restarted: the new driver calls :meth:`Dispatcher.reattach` with the saved ``in_flight()`` mapping and
collects the same jobs without submitting them again. Every failure of a child (exception, cancel,
time-out, OOM, preemption without requeue, job unknown to the scheduler) arrives as a ``Completed``
whose ``result`` has that status, the reason in ``result.error`` and ``evaluator.failure_reward``.

No task is trained twice by jobs the dispatcher has lost track of: each job claims its task when it
starts, a collected task's claim stays as a tombstone, and only :meth:`Dispatcher.submit` (a deliberate
new attempt) clears it; :mod:`slurm.claims` states the rule.

Example::

    dispatcher = Dispatcher(ExecutorConfig(executor="slurm", partition="gpu", gpus_per_child=1), run_dir / "jobs")
    dispatcher.check()                       # ClusterConfigError before anything is submitted
    dispatcher.submit([Task(key, evaluator, arch) for key, arch in children][: dispatcher.capacity()])
    for done in dispatcher.wait(timeout=60):
        store.put(done.key, done.result)
"""

from __future__ import annotations

import logging
from collections import Counter
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas_env.evaluators import Evaluator
from nas_env.results import EvalResult, Status, failure
from nas_env.spaces.base import Architecture
from slurm import faults
from slurm.backend import Backend, JobRecord, SubmissionError
from slurm.config import ClusterConfigError, ExecutorConfig
from slurm.inline_backend import InlineBackend
from slurm.claims import claimed_by, release_dead_claim, clear_settled_claim, read_claim, settle_claim
from slurm.job import EvaluateTask, checkpoint_path, claim_path
from slurm.local_backend import LocalBackend
from slurm.pool import PoolBackend
from slurm.simulated_backend import SimulatedBackend
from slurm.slurm_backend import SlurmBackend

__all__ = ["ClusterConfigError", "Completed", "Dispatcher", "ExecutorConfig", "Task"]

log = logging.getLogger(__name__)

_BACKENDS: dict[str, type[Backend]] = {
    "local": LocalBackend,
    "slurm": SlurmBackend,
    "inline": InlineBackend,
    "simulated": SimulatedBackend,
}


@dataclass(frozen=True)
class Task:
    """One evaluation to run; ``key`` is unique among the tasks in flight (e.g. the store key)."""

    key: str
    evaluator: Evaluator
    arch: Architecture


@dataclass(frozen=True)
class Completed:
    """A finished task; failures are results with a non-OK status and the reason in ``result.error``."""

    key: str
    job_id: str | None
    result: EvalResult


class Dispatcher:
    """Submits tasks as jobs of one executor and collects their results; see the module docstring.

    ``folder`` holds the job files (pickles, logs, checkpoints); put it inside the run directory so a
    restarted driver finds its jobs there. Not thread-safe: call it from the search loop only.
    """

    def __init__(self, config: ExecutorConfig, folder: str | Path) -> None:
        self.config = config
        self.folder = Path(folder).expanduser().absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        pooled = config.pool > 0 or config.children_per_gpu > 1  # workers that pull tasks (slurm/pool.py)
        self._backend: Backend = (PoolBackend if pooled else _BACKENDS[config.executor])(config, self.folder)
        self._records: dict[str, JobRecord] = {}
        self._ready: list[Completed] = []
        self._last_refresh = float("-inf")

    # ------------------------------------------------------------------ set-up
    def check(self) -> None:
        """Validate the executor settings (for slurm: tools, controller, partition, limits, accounting).
        Raises ClusterConfigError naming the problem; submits nothing."""
        self._backend.check()

    @property
    def scheduler_calls(self) -> int:
        """Status queries made so far (sacct calls for slurm): at most one per ``poll_interval_s``."""
        return self._backend.calls

    @property
    def scheduler_submissions(self) -> int:
        """Submissions made so far (sbatch calls for slurm): one per job array, or per batch of pool workers."""
        return self._backend.submissions

    # ------------------------------------------------------------------ submitting
    def capacity(self) -> int:
        """How many more tasks may be submitted now (``max_in_flight`` minus the tasks in flight)."""
        return max(0, self.config.max_in_flight - len(self._records))

    def submit(self, tasks: Sequence[Task]) -> list[str]:
        """Submit the tasks as one job array; returns their job ids, in order.

        Raises ValueError for more tasks than :meth:`capacity` or a key already in flight. If the
        scheduler refuses the batch, no ids are returned and each task comes back from the next
        :meth:`poll` as NOT_STARTED with the scheduler's message.

        Submitting is a deliberate new attempt: the tombstone of an earlier, collected attempt at a key
        is cleared, so the new job trains. A live claim (a job of the key still owns it) is kept, and
        the new job steps aside for that job (see :mod:`slurm.claims`).
        """
        tasks = list(tasks)
        if not tasks:
            return []
        if len(tasks) > self.capacity():
            raise ValueError(
                f"{len(tasks)} tasks exceed the capacity of {self.capacity()} "
                f"(max_in_flight={self.config.max_in_flight}, {len(self._records)} in flight)"
            )
        counts = Counter(t.key for t in tasks)
        duplicated = sorted({k for k, n in counts.items() if n > 1 or k in self._records})
        if duplicated:
            raise ValueError(f"task keys already in flight or repeated in this batch: {duplicated}")
        for task in tasks if self._backend.claim_files else ():
            if clear_settled_claim(claim_path(self.folder, task.key)) is not None:
                log.info("task %r is submitted again: the tombstone of its earlier attempt is cleared", task.key)
        threads = self._backend.child_threads()  # the same for every task of the batch
        functions = [
            EvaluateTask(
                t.key,
                t.evaluator,
                t.arch,
                str(checkpoint_path(self.folder, t.key)),
                str(claim_path(self.folder, t.key)),
                threads=threads,
            )
            for t in tasks
        ]
        try:
            submitted = self._backend.submit(functions)
        except SubmissionError as e:
            log.warning("%s; %d tasks end as not started", e, len(tasks))
            self._ready += [
                Completed(t.key, None, faults.not_started(str(e), t.evaluator.failure_reward, None)) for t in tasks
            ]
            return []
        now = time.time()
        for task, (job_id, job) in zip(tasks, submitted):
            self._records[task.key] = JobRecord(task.key, job_id, job, task.evaluator.failure_reward, now)
        log.info("submitted %d tasks as %s jobs %s", len(tasks), self.config.executor, [i for i, _ in submitted])
        return [job_id for job_id, _ in submitted]

    # ------------------------------------------------------------------ collecting
    def poll(self) -> list[Completed]:
        """The tasks finished since the last call; never blocks on a job, never raises for a child's fault.
        The scheduler is queried once for all jobs at most every ``poll_interval_s``."""
        now = time.monotonic()
        if self._records and now - self._last_refresh >= self._backend.refresh_interval_s:
            self._last_refresh = now
            try:
                self._backend.refresh(list(self._records.values()) if not self.virtual else [])
            except Exception:  # noqa: BLE001 - a broken status query must not stop the search
                log.exception("refreshing the state of %d jobs failed", len(self._records))
            wall = time.time()
            for record in self._backend.candidates(self._records):
                try:
                    result = self._backend.outcome(record, wall)
                except Exception:  # noqa: BLE001 - e.g. a result pickle that no longer unpickles
                    error = f"could not read the outcome of job {record.job_id}:\n{traceback.format_exc()}"
                    result = failure(Status.FAILED, error=error, reward=record.failure_reward, job_id=record.job_id)
                if result is None:
                    continue
                owner = claimed_by(result)
                if owner is not None and self._follow_claim(record, owner):
                    continue
                if result.status is Status.LOST and self._run_again(record, result):
                    continue
                if not result.ok and not result.wall_time_s:
                    result = result.with_updates(wall_time_s=max(0.0, record.age(wall)))
                del self._records[record.key]
                self._ready.append(Completed(record.key, record.job_id, result))
                if self._backend.claim_files:
                    self._settle(record, result)
                    if result.status is Status.OK:
                        checkpoint_path(self.folder, record.key).unlink(missing_ok=True)
        done, self._ready = self._ready, []
        return done

    @property
    def virtual(self) -> bool:
        """Whether this executor runs on a virtual clock (``simulated``): :meth:`clock` is then its time."""
        return bool(getattr(self._backend, "virtual", False))

    def clock(self) -> float:
        """The executor's time in seconds: the virtual clock of ``simulated``, else ``time.monotonic()``."""
        return float(self._backend.now) if self.virtual else time.monotonic()  # type: ignore[attr-defined]

    def set_clock(self, now: float) -> None:
        """Put a virtual clock where an earlier driver of the run left it (a resume; never backwards)."""
        if self.virtual:
            self._backend.now = max(float(self._backend.now), float(now))  # type: ignore[attr-defined]

    def wait(self, timeout: float | None = None) -> list[Completed]:
        """Block until at least one task completes (or ``timeout`` seconds pass, or nothing is in flight).
        On a virtual clock nothing blocks: the clock jumps to the next completion."""
        if self.virtual:
            done = self.poll()
            if done or not self._records:
                return done
            self._backend.advance(self._records)  # type: ignore[attr-defined]
            self._last_refresh = float("-inf")
            return self.poll()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = self.poll()
            if done or not self._records:
                return done
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return []
            pause = max(0.01, self._last_refresh + self._backend.refresh_interval_s - now)
            if deadline is not None:
                pause = min(pause, deadline - now)
            time.sleep(pause)

    def _follow_claim(self, record: JobRecord, owner: dict[str, str]) -> bool:
        """A job found its task owned by another job: watch the owner instead. False if it cannot be."""
        try:
            owner_id = self._backend.job_id_of_claim(owner)
            if owner_id == record.job_id:
                return False
            job, _ = self._backend.attach(owner_id)
        except (KeyError, ValueError) as e:
            log.warning("job %s found its task claimed by %s, which cannot be watched: %s", record.job_id, owner, e)
            return False
        log.info("task %r is evaluated by job %s, not by its duplicate %s", record.key, owner_id, record.job_id)
        self._records[record.key] = JobRecord(record.key, owner_id, job, record.failure_reward, record.submitted_at)
        return True

    def _run_again(self, record: JobRecord, result: EvalResult) -> bool:
        """A job ended without delivering its result (killed or interrupted after or during training): run its
        task again in a new job, which resumes from the task's checkpoint, up to ``max_requeues`` times. The
        dead job's claim is released first, else the new job would step aside for it. False: not possible."""
        if record.retries >= self.config.max_requeues:
            return False
        try:
            _, function = self._backend.attach(record.job_id)
        except (KeyError, ValueError):
            function = None
        if function is None:
            return False
        path = claim_path(self.folder, record.key)
        claim = read_claim(path)
        if claim is not None and self._backend.claim_files:
            try:
                if self._backend.job_id_of_claim(claim) == record.job_id:
                    release_dead_claim(path, claim)
            except (KeyError, ValueError):
                pass
        try:
            ((job_id, job),) = self._backend.submit([function])
        except SubmissionError as e:
            log.warning("task %r could not be run again: %s", record.key, e)
            return False
        log.warning("job %s of task %r ended without a result (%s); running it again as job %s",
                    record.job_id, record.key, (result.error or "").splitlines()[0], job_id)  # fmt: skip
        self._records[record.key] = JobRecord(record.key, job_id, job, record.failure_reward, record.submitted_at,
                                              retries=record.retries + 1)  # fmt: skip
        return True

    def _settle(self, record: JobRecord, result: EvalResult) -> None:
        """Turn the claim of the collected job into a tombstone (if the job owns the task's claim)."""
        path = claim_path(self.folder, record.key)
        claim = read_claim(path)
        if claim is None:
            return  # the job never started (or runs inline): there is nothing to protect
        try:
            owner_id = self._backend.job_id_of_claim(claim)
        except (KeyError, ValueError):
            return
        if owner_id == record.job_id:
            settle_claim(path, claim, result.status.value)

    def claimed(self, key: str) -> str | None:
        """The id of the job that has started the task ``key``: it owns the task while it runs, and its
        claim stays (settled) once its result is collected, until the key is submitted again.

        A restarted driver asks this for tasks it proposed but has no job id for (it died between
        submitting them and recording the ids): a claimed task is reattached, not submitted again;
        reattaching a job whose result was already collected collects the same result again.
        """
        if not self._backend.claim_files:
            return self._backend.job_of_key(key)
        claim = read_claim(claim_path(self.folder, key))
        if claim is None:
            return None
        try:
            return self._backend.job_id_of_claim(claim)
        except (KeyError, ValueError):
            return None

    def in_flight(self) -> dict[str, str]:
        """``key -> job id`` of the tasks submitted and not yet returned by poll(); save it to reattach."""
        return {key: record.job_id for key, record in self._records.items()}

    def job(self, key: str) -> Any:
        """The submitit Job of a task in flight (None for inline), e.g. to send it a signal in tests."""
        return self._records[key].job

    # ------------------------------------------------------------------ restarts and control
    def reattach(self, pending: Mapping[str, str]) -> None:
        """Watch jobs submitted by an earlier driver (``key -> job id`` from its ``in_flight()``), without
        resubmitting them. A job whose files are gone or which the scheduler never knew ends NOT_STARTED."""
        for key, job_id in pending.items():
            job_id = str(job_id)
            if key in self._records:
                if self._records[key].job_id != job_id:
                    raise ValueError(f"task {key!r} is already in flight as job {self._records[key].job_id}")
                continue
            try:
                job, function = self._backend.attach(job_id)
            except ValueError as e:
                self._ready.append(Completed(key, job_id, faults.not_started(str(e), 0.0, job_id)))
                continue
            if function is not None and function.key != key:
                log.warning("job %s was submitted for task %r, reattached as %r", job_id, function.key, key)
            reward = function.evaluator.failure_reward if function is not None else 0.0
            self._records[key] = JobRecord(key, job_id, job, reward)
        self._last_refresh = float("-inf")
        log.info("reattached %d jobs", len(pending))

    def cancel(self, key: str) -> None:
        """Cancel a task in flight; its CANCELLED result (or its result, if it already ended) comes from poll()."""
        if key not in self._records:
            raise KeyError(f"task {key!r} is not in flight")
        record = self._records[key]
        record.cancelled = True
        self._backend.cancel(record)

    def close(self, cancel: bool = False) -> None:
        """Stop watching. Jobs keep running (a later driver may reattach) unless ``cancel`` is True."""
        if cancel:
            for record in list(self._records.values()):
                self._backend.cancel(record)
        self._backend.close()

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
