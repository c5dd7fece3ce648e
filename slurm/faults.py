"""How a job's end becomes an :class:`EvalResult`: scheduler states and remote tracebacks mapped to statuses.

Pure functions, no scheduler calls: the backends gather the facts (result pickle, SLURM state, exit
code), these decide what they mean. A failed child is a result with a status and a reason, never an
exception out of the dispatcher.
"""

from __future__ import annotations

from pathlib import Path

from submitit.core import utils as submitit_utils

from nas_env.failures import classify_traceback
from nas_env.results import EvalResult, Status, failure

#: SLURM states of a job that is still queued or running (or about to run again after a requeue)
ACTIVE_STATES = frozenset(
    {
        "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
        "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "READY", "UNKNOWN",
    }
)  # fmt: skip

#: final SLURM states that carry no result pickle, and what they mean for the child
STATE_STATUS: dict[str, Status] = {
    "CANCELLED": Status.CANCELLED,
    "TIMEOUT": Status.TIMEOUT,
    "DEADLINE": Status.TIMEOUT,
    "OUT_OF_MEMORY": Status.OOM,
    "NODE_FAIL": Status.FAILED,
    "FAILED": Status.FAILED,
    "COMPLETED": Status.FAILED,  # completed without a result pickle: the job function never returned
    "PREEMPTED": Status.PREEMPTED,
    "BOOT_FAIL": Status.NOT_STARTED,
    "REVOKED": Status.NOT_STARTED,
    "SPECIAL_EXIT": Status.FAILED,
}

_STATE_REASON = {
    "CANCELLED": "the job was cancelled",
    "TIMEOUT": "the job reached its time limit",
    "DEADLINE": "the job reached its deadline",
    "OUT_OF_MEMORY": "the job ran out of memory and was killed",
    "NODE_FAIL": "the node running the job failed",
    "FAILED": "the job exited with an error",
    "COMPLETED": "the job ended without writing a result",
    "PREEMPTED": "the job was preempted and not requeued",
    "BOOT_FAIL": "the node failed to boot for the job",
    "REVOKED": "the job was revoked (federation)",
    "SPECIAL_EXIT": "the job ended in SPECIAL_EXIT",
}


def base_state(state: str) -> str:
    """``"CANCELLED by 0"`` -> ``"CANCELLED"``; upper-case, first word."""
    return (state or "UNKNOWN").split()[0].upper().rstrip("+")


def is_active(state: str) -> bool:
    """Whether a SLURM state means the job may still produce a result."""
    return base_state(state) in ACTIVE_STATES


def status_from_traceback(trace: str) -> Status:
    """Classify the traceback of a job function that raised: submitit's own time-out and preemption
    messages here, everything else (OOM, setup error, failure) by :func:`nas_env.failures.classify_traceback`."""
    if "timed-out too many times" in trace:
        return Status.TIMEOUT
    if "Job not requeued because" in trace:
        return Status.PREEMPTED
    return classify_traceback(trace)


def from_traceback(trace: str, failure_reward: float, job_id: str | None) -> EvalResult:
    """The result of a job function that raised: status from the traceback, the traceback as error."""
    return failure(status_from_traceback(trace), error=trace, reward=failure_reward, job_id=job_id)


def from_state(
    state: str,
    failure_reward: float,
    job_id: str | None,
    exit_code: str | None = None,
    reason: str | None = None,
    log_tail: str | None = None,
) -> EvalResult:
    """The result of a job that ended in a final SLURM ``state`` without a result pickle."""
    base = base_state(state)
    status = STATE_STATUS.get(base, Status.FAILED)
    parts = [f"{_STATE_REASON.get(base, 'the job ended')} (SLURM state {state}"]
    if exit_code:
        parts.append(f", exit code {exit_code}")
    if reason and reason not in ("None", ""):
        parts.append(f", reason {reason}")
    message = "".join(parts) + ")"
    if log_tail:
        message += "\n--- end of the job's stderr ---\n" + log_tail
    return failure(status, error=message, reward=failure_reward, job_id=job_id)


def not_started(reason: str, failure_reward: float, job_id: str | None) -> EvalResult:
    """The result of a job that never ran (refused by the scheduler, or unknown to it)."""
    return failure(Status.NOT_STARTED, error=reason, reward=failure_reward, job_id=job_id)


def cancelled(reason: str, failure_reward: float, job_id: str | None) -> EvalResult:
    """The result of a job that was cancelled before it produced a result."""
    return failure(Status.CANCELLED, error=reason, reward=failure_reward, job_id=job_id)


def read_outcome(result_pickle: Path) -> tuple[str, object] | None:
    """``("success", value)`` or ``("error", traceback)`` from a submitit result pickle; None if absent."""
    if not result_pickle.exists():
        return None
    try:
        outcome = submitit_utils.pickle_load(result_pickle)
    except (EOFError, OSError):  # written by rename, so this only happens on a flaky shared file system
        return None
    return outcome[0], outcome[1]


def from_outcome(
    outcome: tuple[str, object], failure_reward: float, job_id: str | None
) -> EvalResult:
    """Turn a result pickle's content into the child's result (with ``job_id`` set)."""
    kind, value = outcome
    if kind == "success":
        if isinstance(value, EvalResult):
            return value.with_updates(job_id=job_id)
        return failure(
            Status.FAILED,
            error=f"the job function returned {type(value).__name__}, not an EvalResult",
            reward=failure_reward,
            job_id=job_id,
        )
    return from_traceback(str(value), failure_reward, job_id)


def tail(path: Path, lines: int = 20) -> str | None:
    """The last lines of a log file, or None."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    text = "\n".join(text.splitlines()[-lines:])
    return text or None
