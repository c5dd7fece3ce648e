"""Claim files: the first job to start a task writes its id there, so no task is ever trained twice.

A driver killed between submitting a batch and recording its job ids leaves jobs that nobody knows
of. On resume the task is submitted again; without a claim both jobs would train it. With one, a job
that finds the task claimed by another job returns at once with :func:`duplicate_result`, and the
dispatcher follows the claim to the job that owns the task. A requeued job (preemption, time-out)
keeps its job id and so keeps its claim.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from nas_env.results import EvalResult, Status

#: ``EvalResult.extra`` key of a job that found its task claimed: the owner's claim
CLAIMED_BY = "claimed_by"


def current_job_claim() -> dict[str, str] | None:
    """This process's submitit job as a claim (``job_id`` and job ``folder``), or None outside a job."""
    try:
        from submitit import JobEnvironment

        env = JobEnvironment()
        return {"job_id": str(env.job_id), "folder": os.environ.get("SUBMITIT_FOLDER", "")}
    except (RuntimeError, KeyError):
        return None


def read_claim(path: str | Path) -> dict[str, str] | None:
    """The claim in ``path``; None if there is none (or it cannot be read as one)."""
    try:
        claim = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return claim if isinstance(claim, dict) and "job_id" in claim else None


def claim_task(path: str | Path, owner: dict[str, str]) -> dict[str, str] | None:
    """Claim the task for ``owner``; returns None if it is now ours, else the other job's claim.

    The claim appears atomically with its content (written aside, then hard-linked into place), so a
    reader never sees a half-written one, also on NFS. A claim that cannot be read is taken over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    aside.write_text(json.dumps(owner, sort_keys=True))
    try:
        for _ in range(2):
            try:
                os.link(aside, path)
                return None
            except FileExistsError:
                existing = read_claim(path)
                if existing is None:  # unreadable: replace it and try once more
                    path.unlink(missing_ok=True)
                    continue
                return None if existing == owner else existing
        return read_claim(path)
    finally:
        aside.unlink(missing_ok=True)


def release_claim(path: str | Path) -> None:
    """Remove the claim, so the task may run again (the dispatcher does so once it has the task's result)."""
    Path(path).unlink(missing_ok=True)


def duplicate_result(owner: dict[str, str], reward: float) -> EvalResult:
    """What a job returns, untrained, when another job owns its task (the dispatcher follows ``owner``)."""
    return EvalResult(
        status=Status.NOT_STARTED,
        reward=reward,
        error=f"the task is already being evaluated by job {owner.get('job_id')}",
        extra={CLAIMED_BY: dict(owner)},
    )


def claimed_by(result: EvalResult) -> dict[str, Any] | None:
    """The owner's claim if ``result`` is a :func:`duplicate_result`, else None."""
    owner = result.extra.get(CLAIMED_BY) if result.status is Status.NOT_STARTED else None
    return owner if isinstance(owner, dict) else None
