"""The driver side of a worker pool (``--pool N``, ``--children-per-gpu k``): a backend whose jobs are tasks.

Instead of one scheduler job per child, :class:`PoolBackend` writes each task (the pickled
:class:`~slurm.job.EvaluateTask`) as ``jobs/pool/tasks/<attempt>~<claim>.pkl`` and keeps up to N long-lived
worker jobs (:class:`~slurm.pool_worker.PoolWorker`, started through the local or slurm backend) running
while tasks remain. A task's "job id" is its attempt id; its result is ``jobs/pool/results/<attempt>.pkl``.
The dispatcher sees an ordinary backend, so the search core does not change, ``--max-in-flight`` still caps
the tasks in flight, and the claims of :mod:`slurm.claims` keep a task trained once.

Failures: a worker that dies mid-task (SIGKILL, preemption, node loss) leaves a live claim naming it. The
worker is dead when its job has ended or its heartbeat file is stale or gone; the backend then releases
that claim (rule 4 of :mod:`slurm.claims`) and the task file, still there, is taken by another worker,
which resumes from the task's epoch checkpoint. Dead workers are replaced while tasks remain. A killed
driver loses nothing: tasks and results stay in the run directory, and the resumed driver reattaches to
the attempts by id. Workers end when :meth:`PoolBackend.close` finds nothing left to run (``pool/done``)
or after ``pool_idle_timeout_s`` without the driver's heartbeat.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cloudpickle

import slurm.faults as faults
from nas_env.errors import SetupError
from nas_env.gpu_share import child_memory_fraction
from nas_env.results import EvalResult, Status, failure
from slurm.backend import Backend, JobRecord, SubmissionError
from slurm.claims import is_settled, read_claim, release_dead_claim
from slurm.config import ClusterConfigError, ExecutorConfig
from slurm.job import EvaluateTask
from slurm.local_backend import LocalBackend
from slurm.pool_worker import PoolPaths, PoolWorker, atomic_write, attempt_of
from slurm.slurm_backend import SlurmBackend

log = logging.getLogger(__name__)

#: a worker whose heartbeat file is older than this is dead (it touches it every second)
HEARTBEAT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PoolTask:
    """The job object of a pool task (what ``Dispatcher.job`` returns): its attempt id and task file."""

    attempt: str
    task_file: Path


def pool_workers(config: ExecutorConfig) -> int:
    """How many worker jobs a pool config keeps at most: ``pool``, or one (the local slot) for
    ``children_per_gpu`` > 1 alone."""
    return max(1, int(config.pool))


class PoolBackend(Backend):
    """Tasks through files, run by at most ``pool_workers(config)`` worker jobs of the config's executor."""

    def __init__(self, config: ExecutorConfig, folder: Path) -> None:
        super().__init__(config, folder)
        self.paths = PoolPaths(folder / "pool")
        self.paths.make()
        self.paths.done.unlink(missing_ok=True)  # a new driver of the run: its workers must not stop
        self.workers = pool_workers(config)
        self.children = int(config.children_per_gpu)
        launcher = LocalBackend if config.executor == "local" else SlurmBackend
        # a worker job holds k children: k times a child's CPUs and memory, the GPUs they share
        per_worker = config.replace(max_in_flight=self.workers, cpus_per_child=config.cpus_per_child * self.children,
                                    mem_gb=None if config.mem_gb is None else config.mem_gb * self.children)  # fmt: skip
        self.launcher: Backend = launcher(per_worker, self.paths.root)
        self._jobs: dict[str, JobRecord] = {}  # worker job id -> record, while the job may run
        self._ended: set[str] = set()  # worker jobs seen ended
        self._open: dict[str, Path] = {}  # attempt -> task file, until outcome() returns its result
        self._releases: Counter[str] = Counter()  # dead workers' claims released, per attempt
        self._worker_errors: list[str] = []  # worker jobs that ended with an exception
        self._setup_error: str | None = None
        self._touch_driver()

    # ------------------------------------------------------------------ Backend
    def check(self) -> None:
        self.launcher.check()
        if self.config.executor == "local" and self.config.gpus_per_child and self.children > 1:
            self._check_local_gpu()

    def _check_local_gpu(self) -> None:
        """The free-memory check of k children on this machine's first GPU, before anything is submitted."""
        import torch

        if not torch.cuda.is_available():
            return
        free, total = torch.cuda.mem_get_info(0)
        try:
            child_memory_fraction(self.children, free, total, "cuda:0")
        except SetupError as e:
            raise ClusterConfigError(str(e)) from None

    def submit(self, functions: Sequence[EvaluateTask]) -> list[tuple[str, Any]]:
        submitted = []
        try:
            for function in functions:
                attempt = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"  # sorts by submission: first in, first run
                path = self.paths.task_file(attempt, function.claim_path or attempt)
                atomic_write(path, cloudpickle.dumps(function))
                self._open[attempt] = path
                submitted.append((attempt, PoolTask(attempt, path)))
        except OSError as e:
            raise SubmissionError(f"could not write pool tasks: {e}") from e
        self._touch_driver()
        self._keep_workers()
        return submitted

    def attach(self, job_id: str) -> tuple[Any, EvaluateTask | None]:
        found = sorted(self.paths.tasks.glob(f"{job_id}~*.pkl"))
        if not found and not self.paths.result_file(job_id).exists():
            raise ValueError(f"pool task {job_id} is unknown: no task or result file under {self.paths.root}")
        path = found[0] if found else self.paths.task_file(job_id, job_id)
        function = None
        if found:
            self._open[job_id] = path
            try:
                function = cloudpickle.loads(path.read_bytes())
            except (OSError, EOFError, ValueError):
                function = None
        return PoolTask(job_id, path), function

    def refresh(self, records: Sequence[JobRecord]) -> None:
        """Check the worker jobs (one scheduler query), replace dead ones while tasks remain."""
        self._touch_driver()
        if self._jobs:
            self.launcher.refresh(list(self._jobs.values()))
            self.calls = self.launcher.calls
        now = time.time()
        for job_id, record in list(self._jobs.items()):
            ended = self.launcher.outcome(record, now)
            if ended is None:
                continue
            del self._jobs[job_id]
            self._ended.add(job_id)
            returned = faults.read_outcome(record.job.paths.result_pickle)  # ("success", tasks run): it ended itself
            if returned is None or returned[0] != "success":
                self._worker_errors.append(f"pool worker {job_id} ended: {(ended.error or '').strip()}")
                log.warning("%s", self._worker_errors[-1])
        if self._setup_error is None:
            for error in sorted(self.paths.errors.glob("*.txt")):
                self._setup_error = error.read_text().strip()
        self._keep_workers()

    def outcome(self, record: JobRecord, now: float) -> EvalResult | None:
        attempt = record.job_id
        found = faults.read_outcome(self.paths.result_file(attempt))
        if found is not None:
            self._finish(attempt)
            return faults.from_outcome(found, record.failure_reward, attempt)
        if self._setup_error is not None:
            self._finish(attempt)
            return failure(Status.SETUP, error=self._setup_error, reward=record.failure_reward, job_id=attempt)
        if record.cancelled:
            self._finish(attempt)
            return faults.cancelled("the task was cancelled", record.failure_reward, attempt)
        task_file = self._open.get(attempt) or getattr(record.job, "task_file", None)
        if task_file is None or not Path(task_file).exists():
            self._finish(attempt)
            return faults.not_started(f"pool task {attempt} is unknown (no task file)", record.failure_reward, attempt)
        if self._workers_keep_failing():
            self._finish(attempt)
            error = f"{len(self._worker_errors)} pool workers failed; the last: {self._worker_errors[-1]}"
            return failure(Status.FAILED, error=error, reward=record.failure_reward, job_id=attempt)
        claim_file = self.paths.claim_of_task_file(Path(task_file))
        claim = read_claim(claim_file)
        if claim is None or is_settled(claim) or claim.get("job_id") != attempt:
            return None  # not started yet, or the twin of another attempt (its worker reports a duplicate)
        if not self._worker_dead(str(claim.get("worker", "")), now):
            return None
        self._releases[attempt] += 1
        if self._releases[attempt] > self.config.max_requeues:
            self._finish(attempt)
            error = f"pool task {attempt}: its worker died {self._releases[attempt]} times (last {claim.get('worker')})"
            return failure(Status.LOST, error=error, reward=record.failure_reward, job_id=attempt)
        release_dead_claim(claim_file, claim)
        log.warning("pool worker %s died running task %r; another worker resumes it", claim.get("worker"), record.key)
        return None

    def cancel(self, record: JobRecord) -> None:
        task_file = self._open.get(record.job_id)
        if task_file is not None:
            task_file.unlink(missing_ok=True)  # a worker that has not taken it never will

    def close(self) -> None:
        """Nothing left to run (the search is over, or every task was cancelled): tell the workers to end.
        Otherwise (an interrupted driver) they wait for a resumed driver up to the idle timeout."""
        if not any(path.exists() for path in self._open.values()):
            self.paths.done.touch()
            beating = self._beating_worker_jobs(time.time())
            for job_id, record in self._jobs.items():
                if job_id not in beating:  # still queued: it would only start to see done and exit
                    self.launcher.cancel(record)
        self.launcher.close()

    # ------------------------------------------------------------------ workers
    def _finish(self, attempt: str) -> None:
        path = self._open.pop(attempt, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def _touch_driver(self) -> None:
        self.paths.driver_alive.touch()

    def _worker_job(self, data: dict[str, Any]) -> str | None:
        try:
            return self.launcher.job_id_of_claim(data["job"])
        except (KeyError, TypeError, ValueError):
            return None

    def _worker_dead(self, worker: str, now: float) -> bool:
        """A worker is dead when its heartbeat file is gone or stale, or its job has ended."""
        fresh, job = self._heartbeat(self.paths.worker_file(worker), now)
        return not fresh or job in self._ended

    def _live_worker_jobs(self, now: float) -> set[str]:
        """Worker jobs that may still pull tasks: those started here and not ended, and those of an earlier
        driver whose slots beat recently."""
        return set(self._jobs) | self._beating_worker_jobs(now)

    def _beating_worker_jobs(self, now: float) -> set[str]:
        """Worker jobs (not seen ended) with a slot whose heartbeat is fresh."""
        live: set[str] = set()
        for path in self.paths.workers.glob("*.json"):
            fresh, job = self._heartbeat(path, now)
            if fresh and job is not None and job not in self._ended:
                live.add(job)
        return live

    def _heartbeat(self, path: Path, now: float) -> tuple[bool, str | None]:
        """Whether a slot's heartbeat file is fresh, and the worker job it names (False, None: gone or unreadable)."""
        try:
            age = now - path.stat().st_mtime
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return False, None
        return age <= HEARTBEAT_TIMEOUT_S, self._worker_job(data)

    def _workers_keep_failing(self) -> bool:
        """More worker jobs failed than N workers with all their requeues: stop starting new ones."""
        return len(self._worker_errors) > self.workers * (self.config.max_requeues + 1)

    def _keep_workers(self) -> None:
        """Start workers until min(N, open tasks / k) may run (none when the workers keep failing)."""
        if not self._open or self._workers_keep_failing():
            return
        want = min(self.workers, math.ceil(len(self._open) / self.children))
        missing = want - len(self._live_worker_jobs(time.time()))
        if missing <= 0:
            return
        worker = PoolWorker(str(self.paths.root), self.children, self.config.pool_idle_timeout_s)
        try:
            started = self.launcher.submit([worker] * missing)  # type: ignore[list-item]
        except SubmissionError as e:
            log.warning("could not start %d pool workers: %s", missing, e)
            return
        self.submissions = self.launcher.submissions
        for job_id, job in started:
            self._jobs[job_id] = JobRecord("pool-worker", job_id, job)
        log.info("started %d pool workers %s", missing, [job_id for job_id, _ in started])
