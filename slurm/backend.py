"""What every executor backend offers the dispatcher: submit, rebuild, refresh, read outcomes, cancel.

A backend turns job functions into jobs and jobs into results. The dispatcher keeps the book-keeping
(which key runs as which job) in :class:`JobRecord` s and calls :meth:`Backend.refresh` at most once
per poll interval, so one status query covers every job in flight.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from submitit.core.utils import DelayedSubmission

from nas_env.results import EvalResult
from slurm.config import ExecutorConfig
from slurm.job import EvaluateTask


class SubmissionError(RuntimeError):
    """The scheduler refused a batch (e.g. sbatch failed); its tasks end as NOT_STARTED."""


@dataclasses.dataclass
class JobRecord:
    """One task in flight: its key, its job and what the dispatcher has seen of it so far."""

    key: str
    job_id: str
    job: Any  # submitit.Job, or None where the backend has no job object (inline)
    failure_reward: float = 0.0
    submitted_at: float = dataclasses.field(default_factory=time.time)
    cancelled: bool = False
    missing_since: float | None = None  # the scheduler did not know the job (first seen so)
    ended_since: float | None = None  # a final state was seen but no result pickle yet
    retries: int = 0  # times the task was run again after a job ended without a result (Status.LOST)

    def age(self, now: float) -> float:
        return now - self.submitted_at


class Backend(abc.ABC):
    """One executor kind (``local``, ``slurm``, ``inline``) over a folder of job files."""

    #: least seconds between two :meth:`refresh` calls (the dispatcher enforces it)
    refresh_interval_s: float = 1.0
    #: whether jobs claim their tasks in claim files (see :mod:`slurm.claims`); a backend that knows every
    #: job's task itself answers :meth:`job_of_key` instead
    claim_files: bool = True

    def __init__(self, config: ExecutorConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.refresh_interval_s = float(config.poll_interval_s)
        #: status queries made so far (one per refresh at most, whatever the number of jobs)
        self.calls = 0
        #: submissions made so far (sbatch calls for slurm, launches for local): one per batch or per pool worker batch
        self.submissions = 0

    def child_threads(self) -> int | None:
        """Torch threads for each child job; None leaves torch's default (a SLURM job sees only its own CPUs)."""
        return None

    @abc.abstractmethod
    def check(self) -> None:
        """Raise ``ClusterConfigError`` if children cannot run with these settings."""

    @abc.abstractmethod
    def submit(self, functions: Sequence[EvaluateTask]) -> list[tuple[str, Any]]:
        """Submit the functions as one batch (job array); ``(job_id, job)`` per function, in order.
        Raises :class:`SubmissionError` when the scheduler refuses the batch."""

    @abc.abstractmethod
    def attach(self, job_id: str) -> tuple[Any, EvaluateTask | None]:
        """Rebuild the job of ``job_id`` from the folder; also its job function if its pickle is there."""

    @abc.abstractmethod
    def refresh(self, records: Sequence[JobRecord]) -> None:
        """Update the state of every job in ``records`` with at most one scheduler query."""

    @abc.abstractmethod
    def outcome(self, record: JobRecord, now: float) -> EvalResult | None:
        """The result of a finished job (from the last refresh), or None while it may still run."""

    @abc.abstractmethod
    def cancel(self, record: JobRecord) -> None:
        """Ask the job to stop; its CANCELLED result arrives through :meth:`outcome`."""

    def candidates(self, records: Mapping[str, JobRecord]) -> Sequence[JobRecord]:
        """The records (by task key) that may have ended since the last refresh: all of them unless the
        backend knows better."""
        return list(records.values())

    def job_of_key(self, key: str) -> str | None:
        """For backends without claim files: the job that last ran the task ``key``, if any."""
        return None

    def job_id_of_claim(self, claim: dict[str, str]) -> str:
        """The job id (as :meth:`submit` gives them) of the job that wrote ``claim`` (see :mod:`slurm.claims`)."""
        return str(claim["job_id"])

    def close(self) -> None:
        """Release what the backend holds in this process (running jobs are left alone)."""


def load_function(submitted_pickle: Path) -> EvaluateTask | None:
    """The job function pickled at submission (None if missing or not one of ours)."""
    if not submitted_pickle.exists():
        return None
    try:
        function = DelayedSubmission.load(submitted_pickle).function
    except Exception:  # noqa: BLE001 - a corrupt or foreign pickle is just "unknown"
        return None
    return function if isinstance(function, EvaluateTask) else None
