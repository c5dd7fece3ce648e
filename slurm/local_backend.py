"""The ``local`` executor: each child in its own subprocess through submitit's LocalExecutor.

The subprocesses outlive the driver, so a new driver can reattach to them from the folder. Each
``submit()`` gets its own sub-folder (local job ids are process ids, which the OS reuses; a fresh
folder keeps a new job from reading an old job's files). A local job id is ``<batch>-<pid>``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import submitit
from submitit.core.utils import JobPaths
from submitit.local.local import LocalJob

import slurm.faults as faults
from nas_env.results import EvalResult, Status, failure
from slurm.backend import Backend, JobRecord, SubmissionError, load_function
from slurm.config import ClusterConfigError
from slurm.job import EvaluateTask

_CONTROLLER_MODULE = "submitit.local._local"


def signal_delay_s(time_limit_min: int) -> int:
    """Seconds before the time limit at which the job is told to checkpoint (submitit's default is 90)."""
    return int(min(90, max(5, time_limit_min * 60 // 10)))


@contextlib.contextmanager
def _children_take_sigint() -> Iterator[None]:
    """While local jobs start: SIGINT caught by a no-op handler instead of ignored, if it was ignored.

    A driver started in the background (``cmd &`` in a script, ``nohup``) has SIGINT ignored, and a started
    process inherits an ignored signal: its job controllers would ignore the SIGINT by which :meth:`cancel` stops
    them, and a cancelled child would go on training. A caught signal is reset to the default at exec, so the
    controllers start with SIGINT's default; the driver meanwhile still ignores it, in effect.
    """
    try:
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, _ignore)
    except ValueError:  # not the main thread: nothing can be changed (nor is needed where it was not ignored)
        ignored = False
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ignore(signum: int, frame: Any) -> None:
    """A SIGINT that arrives while local jobs start: ignored, as it was before."""


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share_of_cores(processes: int) -> int:
    """Torch threads for each of ``processes`` running at once on this machine: its cores divided among them,
    at least one, so that together they do not oversubscribe it."""
    return max(1, available_cores() // processes)


def controller_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) submitit local controller."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and _CONTROLLER_MODULE in cmdline


class LocalBackend(Backend):
    """Subprocesses on this machine, started and watched through submitit's LocalExecutor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs_folder = self.folder / "local"

    # ------------------------------------------------------------------ ids and paths
    def _split(self, job_id: str) -> tuple[Path, str]:
        batch, sep, pid = job_id.rpartition("-")
        if not sep or not batch or not pid.isdigit():
            raise ValueError(f"{job_id!r} is not a local job id (<batch>-<pid>)")
        return self.jobs_folder / batch, pid

    def _paths(self, job_id: str) -> JobPaths:
        folder, pid = self._split(job_id)
        return JobPaths(folder, job_id=pid, task_id=0)

    def _cancel_marker(self, job_id: str) -> Path:
        folder, pid = self._split(job_id)
        return folder / f"{pid}.cancelled"

    # ------------------------------------------------------------------ Backend
    def child_threads(self) -> int:
        """This machine's cores shared among the children in flight: each local child would otherwise start
        a thread per core and oversubscribe the machine (a CPU child ran 1.8x slower with two threads than
        with one while another process held one of two cores)."""
        return share_of_cores(self.config.max_in_flight)

    def check(self) -> None:
        try:
            self.jobs_folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ClusterConfigError(f"cannot create the job folder {self.jobs_folder}: {e}") from e
        if not os.access(self.jobs_folder, os.W_OK):
            raise ClusterConfigError(f"the job folder {self.jobs_folder} is not writable")

    def submit(self, functions: Sequence[EvaluateTask]) -> list[tuple[str, Any]]:
        batch = uuid.uuid4().hex[:8]
        executor = submitit.LocalExecutor(self.jobs_folder / batch, max_num_timeout=self.config.max_requeues)
        executor.update_parameters(
            timeout_min=self.config.time_limit_min,
            gpus_per_node=self.config.gpus_per_child,
            signal_delay_s=signal_delay_s(self.config.time_limit_min),
        )
        executor._throttling = 0.0  # submitit sleeps 0.2 s between local jobs; nothing to protect here
        try:
            with _children_take_sigint(), executor.batch():
                jobs = [executor.submit(function) for function in functions]
        except (OSError, RuntimeError) as e:
            raise SubmissionError(f"could not start local jobs: {e}") from e
        self.submissions += 1
        return [(f"{batch}-{job.job_id}", job) for job in jobs]

    def attach(self, job_id: str) -> tuple[Any, EvaluateTask | None]:
        folder, pid = self._split(job_id)
        job = LocalJob(folder=folder, job_id=pid)
        return job, load_function(job.paths.submitted_pickle)

    def job_id_of_claim(self, claim: dict[str, str]) -> str:
        return f"{Path(claim.get('folder', '')).name}-{claim['job_id']}"  # the folder is the batch's

    def refresh(self, records: Sequence[JobRecord]) -> None:
        self.calls += 1  # no scheduler: states are read from the processes and files in outcome()

    def _running(self, record: JobRecord) -> bool:
        process = getattr(record.job, "_process", None)
        if process is not None:  # started by this driver: poll() also reaps it
            return process.poll() is None
        return controller_alive(int(self._split(record.job_id)[1]))

    def outcome(self, record: JobRecord, now: float) -> EvalResult | None:
        try:
            paths = self._paths(record.job_id)
        except ValueError as e:
            return faults.not_started(str(e), record.failure_reward, record.job_id)
        outcome = faults.read_outcome(paths.result_pickle)
        if outcome is not None:
            return faults.from_outcome(outcome, record.failure_reward, record.job_id)
        if self._running(record):
            return None
        outcome = faults.read_outcome(paths.result_pickle)  # it may have finished since the first look
        if outcome is not None:
            return faults.from_outcome(outcome, record.failure_reward, record.job_id)
        if record.cancelled or self._cancel_marker(record.job_id).exists():
            return faults.cancelled("the job was cancelled", record.failure_reward, record.job_id)
        if not paths.submitted_pickle.exists():
            return faults.not_started(
                f"local job {record.job_id} is unknown (no {paths.submitted_pickle.name})",
                record.failure_reward,
                record.job_id,
            )
        lost = not paths.result_pickle.exists()  # killed before it could write one: its child did not fail
        if lost:
            error = f"local job {record.job_id} ended without writing a result"
        else:
            error = f"local job {record.job_id} ended, but its result file {paths.result_pickle.name} cannot be read"
        log_tail = faults.tail(paths.stderr)
        if log_tail:
            error += "\n--- end of the job's stderr ---\n" + log_tail
        status = Status.LOST if lost else Status.FAILED
        return failure(status, error=error, reward=record.failure_reward, job_id=record.job_id)

    def cancel(self, record: JobRecord) -> None:
        marker = self._cancel_marker(record.job_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        process = getattr(record.job, "_process", None)
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # the controller stops its task, then exits
            return
        pid = int(self._split(record.job_id)[1])
        if controller_alive(pid):
            os.kill(pid, signal.SIGINT)

