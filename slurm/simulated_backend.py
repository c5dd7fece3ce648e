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
job's timeline is a JSON file in ``jobs/simulated/`` and the clock is saved there too, so a killed driver
resumes (reattaching to its jobs by id or by claim) exactly like on a real cluster. A job's result reports
``wall_time_s`` = the worker time it occupied (start-ups, running, the preempted part), which the search core
adds up into the utilization of the workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas_env.failures import classify
from nas_env.results import EvalResult, Status, failure
from slurm.backend import Backend, JobRecord
from slurm.claims import claim_task, duplicate_result
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refresh_interval_s = 0.0
        self.jobs_folder = self.folder / "simulated"
        self._jobs: dict[str, SimulatedJob] = {}
        self.now = self._load_clock()
        self._next = self._next_job_number()

    # ------------------------------------------------------------------ the clock
    def _clock_path(self) -> Path:
        return self.jobs_folder / "clock.json"

    def _load_clock(self) -> float:
        try:
            return float(json.loads(self._clock_path().read_text())["now"])
        except (OSError, ValueError, KeyError):
            return 0.0

    def advance(self, records: Sequence[JobRecord]) -> None:
        """Move the clock to the earliest end among ``records`` (never backwards) and save it."""
        ends = [self._jobs[r.job_id].ends_at for r in records if r.job_id in self._jobs]
        if ends:
            self.now = max(self.now, min(ends))
            self.jobs_folder.mkdir(parents=True, exist_ok=True)
            tmp = self._clock_path().with_suffix(".tmp")
            tmp.write_text(json.dumps({"now": self.now}))
            os.replace(tmp, self._clock_path())

    # ------------------------------------------------------------------ Backend API
    def check(self) -> None:
        self.jobs_folder.mkdir(parents=True, exist_ok=True)

    def _next_job_number(self) -> int:
        numbers = [int(p.stem.rpartition("-")[2]) for p in self.jobs_folder.glob("sim-*.json")]
        return max(numbers, default=0) + 1

    def submit(self, functions: Sequence[EvaluateTask]) -> list[tuple[str, Any]]:
        self.jobs_folder.mkdir(parents=True, exist_ok=True)
        out = []
        for function in functions:
            job_id = f"sim-{self._next}"
            self._next += 1
            owner = None
            if function.claim_path is not None:  # the job's claim, as a real job makes when it starts
                owner = claim_task(function.claim_path, {"job_id": job_id, "folder": str(self.jobs_folder)})
            if owner is not None:
                job = self._job(job_id, function.key, self.now, duplicate_result(owner, function.evaluator.failure_reward), 0.0)
            else:
                job = self._simulate(job_id, function)
            tmp = self._path(job_id).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(job)))
            os.replace(tmp, self._path(job_id))
            self._jobs[job_id] = job
            out.append((job_id, None))
        return out

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

    def _path(self, job_id: str) -> Path:
        return self.jobs_folder / f"{job_id}.json"

    def attach(self, job_id: str) -> tuple[Any, EvaluateTask | None]:
        path = self._path(job_id)
        try:
            self._jobs[job_id] = SimulatedJob(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"simulated job {job_id} has no readable timeline at {path}: {exc}") from exc
        return None, None

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

    def job_id_of_claim(self, claim: dict[str, str]) -> str:
        return str(claim["job_id"])
