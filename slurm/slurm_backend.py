"""The ``slurm`` executor: each ``submit()`` is one SLURM job array through submitit's SlurmExecutor.

States come from one batched ``sacct`` call per refresh (submitit's watcher, with a timeout), never from
``job.state`` per job; results come from the result pickles. ``job.result()`` is never called, so a
cancelled job costs no 15 s wait for a pickle that will not come.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Any, Sequence

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

import slurm.faults as faults
from nas_env.results import EvalResult
from slurm.backend import Backend, JobRecord, SubmissionError, load_function
from slurm.check import check_slurm
from slurm.job import EvaluateTask
from slurm.local_backend import signal_delay_s

log = logging.getLogger(__name__)

#: a job sacct has not heard of for this long (over successful queries) never reached the scheduler
NOT_FOUND_GRACE_S = 60.0
#: COMPLETED/FAILED without a result pickle: wait this long for the file (shared file systems lag)
PICKLE_GRACE_S = 10.0
#: PREEMPTED is final only if the job is not requeued within this long (requeue waits cred_expire)
PREEMPT_GRACE_S = 300.0


class SacctWatcher(SlurmInfoWatcher):
    """submitit's batched ``sacct`` watcher (one call for all jobs), also reading exit code and reason,
    with a call timeout; the dispatcher registers the jobs in flight and forgets them once collected."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        super().__init__(delay_s=1)
        self.timeout_s = timeout_s
        self.last_ok = False  # whether the latest sacct call succeeded

    def _make_command(self) -> list[str] | None:
        # every registered job, also those seen in a final state: the dispatcher forgets collected jobs,
        # and one that looked final (e.g. around a requeue) must be seen again until it is collected
        to_check = sorted({x.split("_")[0] for x in self._registered})
        if not to_check:
            return None
        return ["sacct", "-o", "JobID,State,ExitCode,Reason", "--parsable2", "-j", ",".join(to_check)]

    def update(self) -> None:
        """One sacct call for every registered job (as submitit's watcher, plus a timeout)."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            self._output = subprocess.check_output(command, shell=False, timeout=self.timeout_s)
        except (subprocess.SubprocessError, OSError) as e:
            self.last_ok = False
            log.warning("sacct call #%d failed (%s); job states may be stale", self._num_calls, e)
        else:
            self.last_ok = True
            self._info_dict.update(self.read_info(self._output))

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        """submitit's parsing of the allocation rows, plus OOM kills that sacct shows on a step row only
        (``12_3.0 OUT_OF_MEMORY`` under an allocation that reads ``FAILED``)."""
        info = super().read_info(string)
        text = string.decode() if isinstance(string, bytes) else string
        lines = text.splitlines()
        if not lines:
            return info
        names = lines[0].split("|")
        for line in lines[1:]:
            row = dict(zip(names, line.split("|")))
            job_id, state = row.get("JobID", ""), row.get("State", "")
            parent = job_id.split(".")[0]
            if "." in job_id and state.startswith("OUT_OF_MEMORY") and parent in info:
                if not faults.is_active(info[parent].get("State", "")):
                    info[parent] = {**info[parent], "State": "OUT_OF_MEMORY"}
        return info

    def forget(self, job_id: str) -> None:
        """Stop watching a collected job."""
        self._registered.discard(job_id)
        self._finished.discard(job_id)
        self._info_dict.pop(job_id, None)


class SlurmBackend(Backend):
    """SLURM job arrays; the submitit executor is built at the first submit (check() needs no SLURM)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs_folder = self.folder / "slurm"
        self.watcher = SacctWatcher()
        self._executor: submitit.SlurmExecutor | None = None

    def check(self) -> None:
        check_slurm(self.config)
        self.jobs_folder.mkdir(parents=True, exist_ok=True)

    def executor(self) -> submitit.SlurmExecutor:
        """The SlurmExecutor with this config's resources (``max_in_flight`` is the array parallelism)."""
        if self._executor is None:
            c = self.config
            executor = submitit.SlurmExecutor(folder=self.jobs_folder, max_num_timeout=c.max_requeues)
            params: dict[str, Any] = {
                "job_name": c.job_name,
                "time": c.time_limit_min,
                "nodes": 1,
                "ntasks_per_node": 1,
                "cpus_per_task": c.cpus_per_child,
                "array_parallelism": c.max_in_flight,
                "signal_delay_s": signal_delay_s(c.time_limit_min),
            }
            optional = {"partition": c.partition, "account": c.account, "qos": c.qos}
            params.update({k: v for k, v in optional.items() if v is not None})
            if c.gpus_per_child:
                params["gpus_per_node"] = c.gpus_per_child
            if c.mem_gb is not None:
                params["mem"] = f"{int(round(c.mem_gb * 1024))}MB"
            if c.extra_sbatch:
                params["additional_parameters"] = dict(c.extra_sbatch)
            executor.update_parameters(**params)
            self._executor = executor
        return self._executor

    def submit(self, functions: Sequence[EvaluateTask]) -> list[tuple[str, Any]]:
        try:
            executor = self.executor()
            with executor.batch():
                jobs = [executor.submit(function) for function in functions]
        except (FailedJobError, FailedSubmissionError, OSError, RuntimeError, subprocess.SubprocessError) as e:
            raise SubmissionError(f"sbatch refused the batch: {e}") from e
        self.submissions += 1
        for job in jobs:
            self.watcher.register_job(job.job_id)
        return [(job.job_id, job) for job in jobs]

    def attach(self, job_id: str) -> tuple[Any, EvaluateTask | None]:
        job = SlurmJob(folder=self.jobs_folder, job_id=job_id)
        self.watcher.register_job(job_id)
        return job, load_function(job.paths.submitted_pickle)

    def refresh(self, records: Sequence[JobRecord]) -> None:
        for record in records:
            if record.job_id not in self.watcher._registered:
                self.watcher.register_job(record.job_id)
        calls = self.watcher.num_calls
        self.watcher.update()
        self.calls += self.watcher.num_calls - calls

    def outcome(self, record: JobRecord, now: float) -> EvalResult | None:
        result = self._outcome(record, now)
        if result is not None:
            self.watcher.forget(record.job_id)
        return result

    def _outcome(self, record: JobRecord, now: float) -> EvalResult | None:
        paths = record.job.paths
        outcome = faults.read_outcome(paths.result_pickle)
        if outcome is not None:
            return faults.from_outcome(outcome, record.failure_reward, record.job_id)
        info = self.watcher.get_info(record.job_id, mode="cache")
        if not info:
            if not self.watcher.last_ok:
                return None  # sacct failed: we know nothing new
            if not paths.submitted_pickle.exists():  # no submission in this folder, none in SLURM
                return faults.not_started(
                    f"SLURM job {record.job_id} is unknown: not in sacct, no {paths.submitted_pickle.name}",
                    record.failure_reward,
                    record.job_id,
                )
            record.missing_since = record.missing_since or now
            if now - record.missing_since < NOT_FOUND_GRACE_S:
                return None
            return faults.not_started(
                f"SLURM job {record.job_id} is not known to sacct (never submitted, or purged)",
                record.failure_reward,
                record.job_id,
            )
        record.missing_since = None
        state = info.get("State", "UNKNOWN")
        base = faults.base_state(state)
        if faults.is_active(state):
            record.ended_since = None
            return None
        record.ended_since = record.ended_since or now
        waited = now - record.ended_since
        if base in ("COMPLETED", "FAILED") and waited < PICKLE_GRACE_S:
            return None
        if base == "PREEMPTED" and waited < PREEMPT_GRACE_S:
            return None
        return faults.from_state(
            state,
            record.failure_reward,
            record.job_id,
            exit_code=info.get("ExitCode"),
            reason=info.get("Reason"),
            log_tail=None if base == "CANCELLED" else faults.tail(paths.stderr),
        )

    def cancel(self, record: JobRecord) -> None:
        try:
            record.job.cancel(check=True)  # scancel <id>
        except (subprocess.SubprocessError, OSError) as e:
            log.warning("scancel %s failed: %s", record.job_id, e)
