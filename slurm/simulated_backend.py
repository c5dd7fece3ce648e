"""The ``simulated`` executor: ``max_in_flight`` workers on a virtual clock, behind the same Dispatcher API.

Everything but the clock is real: the search core, the agent, the store, claims, resume. At submission each
child is evaluated at once with ``evaluator.simulate(arch)`` (the NB201 table's training time, the Synthetic
evaluator's ``epochs x seconds_per_epoch``, ...), and its job is given a timeline on the virtual clock:

    queued (sim_queue_delay_s) -> starting (sim_startup_s) -> running (the evaluation's duration) -> done

With probability ``sim_failure_rate`` the child fails part-way (FAILED); with ``sim_preemption_rate`` it is
preempted part-way and, while ``max_requeues`` allows, requeued: it queues and starts again and trains only
the epochs left after its last epoch checkpoint (``resumed_from_epoch`` in its result). The draws come from
``sim_seed`` and the task's key, so a run is reproducible whatever the order of submission.

The dispatcher does not sleep: :meth:`SimulatedBackend.advance` moves the clock to the next completion. Each
job's timeline is one line of ``jobs/simulated/jobs.jsonl``, written before its id is returned, and the search
core saves the clock with every result, so a killed driver resumes (reattaching to its jobs by id, or by task
key where the id was lost: :meth:`job_of_key` plays the role of a claim file) exactly like on a real cluster. A
job's result reports ``wall_time_s`` = the worker time it occupied (start-ups, running, the preempted part),
which the search core adds up into the utilization of the workers.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas_env.failures import classify
from nas_env.results import EvalResult, Status, failure
from slurm.backend import Backend, JobRecord
from slurm.job import EvaluateTask


@dataclass
class SimulatedJob:
    """One job's timeline on the virtual clock and its result."""

    job_id: str
    key: str
    submitted_at: float
    started_at: float
    ends_at: float
    result_json: str

    @property
    def result(self) -> EvalResult:
        return EvalResult.from_json(self.result_json)


class SimulatedBackend(Backend):
    """Jobs as timelines on a virtual clock (see the module docstring)."""

    #: the dispatcher advances this backend's clock instead of sleeping
    virtual = True
    claim_files = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refresh_interval_s = 0.0
        self.jobs_folder = self.folder / "simulated"
        self.now = 0.0  # the search core puts it back where the last driver left it (Dispatcher.set_clock)
        self._jobs: dict[str, SimulatedJob] = {}  # every job of the log, by id
        self._by_key: dict[str, str] = {}  # task key -> its latest job
        self._due: list[tuple[float, str]] = []  # (end, job id) of the jobs watched, earliest first
        self._cancelled: set[str] = set()
        self._read_log()
        self._next = len(self._jobs) + 1
        self._log_file: Any = None

    # ------------------------------------------------------------------ the log of jobs
    def _log_path(self) -> Path:
        return self.jobs_folder / "jobs.jsonl"

    def _read_log(self) -> None:
        try:
            lines = self._log_path().read_text().splitlines()
        except OSError:
            return
        for line in lines:
            try:
                job = SimulatedJob(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut by a kill: that job's id was never handed out
            self._jobs[job.job_id] = job
            self._by_key[job.key] = job.job_id

    def _append(self, jobs: list[SimulatedJob]) -> None:
        if self._log_file is None:
            self.jobs_folder.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self._log_path(), "a")
        self._log_file.write("".join(json.dumps(asdict(job)) + "\n" for job in jobs))
        self._log_file.flush()  # in the file (the OS's cache) before the ids are returned: kill -9 safe

    # ------------------------------------------------------------------ the clock
    def advance(self, records: Mapping[str, JobRecord]) -> None:
        """Move the clock to the earliest end among the jobs in flight (never backwards)."""
        while self._due:
            end, job_id = self._due[0]
            record = records.get(self._jobs[job_id].key)
            if record is not None and record.job_id == job_id:
                self.now = max(self.now, end)
                return
            heapq.heappop(self._due)  # cancelled, or a job no longer watched

    def candidates(self, records: Mapping[str, JobRecord]) -> Sequence[JobRecord]:
        """Only the jobs whose end the clock has reached, in order of their ends, and the cancelled ones: not
        all P jobs in flight."""
        out = []
        while self._due and self._due[0][0] <= self.now:
            job_id = heapq.heappop(self._due)[1]
            record = records.get(self._jobs[job_id].key)
            if record is not None and record.job_id == job_id:
                out.append(record)
        for job_id in list(self._cancelled):
            self._cancelled.discard(job_id)
            record = records.get(self._jobs[job_id].key) if job_id in self._jobs else None
            if record is not None and record.job_id == job_id and record not in out:
                out.append(record)
        return out

    # ------------------------------------------------------------------ Backend API
    def check(self) -> None:
        self.jobs_folder.mkdir(parents=True, exist_ok=True)

    def submit(self, functions: Sequence[EvaluateTask]) -> list[tuple[str, Any]]:
        jobs = []
        for function in functions:
            job = self._simulate(f"sim-{self._next}", function)
            self._next += 1
            jobs.append(job)
        self._append(jobs)
        for job in jobs:
            self._watch(job)
        return [(job.job_id, None) for job in jobs]

    def _watch(self, job: SimulatedJob) -> None:
        self._jobs[job.job_id] = job
        self._by_key[job.key] = job.job_id
        heapq.heappush(self._due, (job.ends_at, job.job_id))

    def _simulate(self, job_id: str, function: EvaluateTask) -> SimulatedJob:
        c = self.config
        digest = int(hashlib.sha256(function.key.encode()).hexdigest()[:12], 16)
        rng = np.random.default_rng([c.sim_seed, digest])
        try:
            result, duration = function.evaluator.simulate(function.arch)
        except Exception as exc:  # noqa: BLE001 - a setup error (and anything else) is the job's result
            result = failure(classify(exc), error=traceback.format_exc(), reward=function.evaluator.failure_reward)
            duration = 0.0
        start = self.now + c.sim_queue_delay_s
        clock = start + c.sim_startup_s
        busy = c.sim_startup_s
        fails, preempted = rng.random() < c.sim_failure_rate, rng.random() < c.sim_preemption_rate
        if fails and result.ok:
            part = float(rng.random()) * duration
            clock, busy = clock + part, busy + part
            result = failure(Status.FAILED, error=f"simulated failure after {part:.1f} s",
                             reward=function.evaluator.failure_reward)  # fmt: skip
        elif preempted and result.ok:
            epochs = max(1, len(result.curve))
            part = float(rng.random()) * duration
            clock, busy = clock + part, busy + part
            if c.max_requeues < 1:
                result = failure(Status.PREEMPTED, error=f"simulated preemption after {part:.1f} s, no requeue",
                                 reward=function.evaluator.failure_reward)  # fmt: skip
            else:
                done_epochs = math.floor(part / duration * epochs) if duration > 0 else 0
                left = duration * (epochs - done_epochs) / epochs
                clock += c.sim_queue_delay_s + c.sim_startup_s + left
                busy += c.sim_startup_s + left
                result = result.with_updates(extra={**result.extra, "resumed_from_epoch": done_epochs, "preempted": 1})
        else:
            clock, busy = clock + duration, busy + duration
        return self._job(job_id, function.key, start, result.with_updates(wall_time_s=busy, job_id=job_id), clock)

    def _job(self, job_id: str, key: str, started: float, result: EvalResult, ends: float) -> SimulatedJob:
        return SimulatedJob(job_id, key, self.now, started, max(ends, self.now), result.to_json())

    def attach(self, job_id: str) -> tuple[Any, EvaluateTask | None]:
        if job_id not in self._jobs:
            raise ValueError(f"simulated job {job_id} is not in {self._log_path()}")
        self._watch(self._jobs[job_id])
        return None, None

    def job_of_key(self, key: str) -> str | None:
        return self._by_key.get(key)

    def refresh(self, records: Sequence[JobRecord]) -> None:
        self.calls += 1

    def outcome(self, record: JobRecord, now: float) -> EvalResult | None:
        job = self._jobs.get(record.job_id)
        if job is None:
            return failure(Status.NOT_STARTED, error=f"simulated job {record.job_id} is unknown",
                           reward=record.failure_reward, job_id=record.job_id)  # fmt: skip
        if record.cancelled:
            return failure(Status.CANCELLED, error=f"simulated job {record.job_id} was cancelled",
                           reward=record.failure_reward, job_id=record.job_id)  # fmt: skip
        return job.result if job.ends_at <= self.now else None

    def cancel(self, record: JobRecord) -> None:
        """The job ends now, CANCELLED (see :meth:`outcome`)."""
        self._cancelled.add(record.job_id)

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
