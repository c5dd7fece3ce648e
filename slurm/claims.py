"""Claim files: the first job to start a task writes its id there, so no task is ever trained twice.

A driver killed between submitting a batch and recording its job ids leaves jobs that nobody knows
of. On resume the task is submitted again; without a claim both jobs would train it. With one, a job
that finds the task claimed by another job returns at once with :func:`duplicate_result`, and the
dispatcher follows the claim to the job that owns the task. A requeued job (preemption, time-out)
keeps its job id and so keeps its claim.

The rule, over the life of one task key:

1. A job claims the key when it starts (:func:`claim_task`: created atomically, first one wins). A job
   that finds a claim of another job, live or settled, returns a duplicate without training.
2. When the dispatcher collects the owner's result it *settles* the claim (:func:`settle_claim`): the
   file stays, marked with the collected status. It is a tombstone: a twin submitted before a driver
   crash that starts only now still finds it and returns at once, instead of training the task again.
   A dispatcher watching such a twin follows the claim to the owner, whose result pickle is still there.
3. Only :meth:`Dispatcher.submit` removes a tombstone (:func:`clear_settled_claim`), just before it
   submits the key again: that is a deliberate new attempt (the earlier result was not cacheable:
   time-out, preemption, cancel, not started) and its job must train. A *live* claim (not settled) is
   never removed while its job may run: a job that owns the task is still running it, and the new job
   steps aside for it.
4. A job that ended without delivering a result (killed or interrupted after it claimed the key) leaves a
   live claim no job will settle. The dispatcher, which has seen that job end, removes that claim
   (:func:`release_dead_claim`, only if it is still that job's) just before it runs the task again
   (``Status.LOST``); the new job then claims the key and resumes from the task's checkpoint.

Races, and why they are harmless:

- Two jobs of the same key start together: :func:`claim_task` creates the file with a hard link, which
  exactly one of them wins, also on NFS; the other sees a complete claim (never a half-written one).
- A twin of an earlier attempt that starts between the tombstone's removal and the new job's start
  claims the key itself and trains it; the new job then steps aside and the dispatcher follows the twin.
  The key is still trained once for this attempt.
- Settling and clearing rewrite or remove a claim only after reading it as the owner's (settling) or as
  a tombstone (clearing); no job changes a readable claim, and the dispatcher is one thread, so nothing
  can replace the claim between the read and the write.
- A claim that cannot be read (written by something else than this module) is taken over; two jobs
  taking over the same broken claim at the same moment could both win, so a broken claim is best effort.
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


#: claim key holding the status of the owner's collected result: the claim is settled (a tombstone)
SETTLED = "settled"


def read_claim(path: str | Path) -> dict[str, str] | None:
    """The claim in ``path``; None if there is none (or it cannot be read as one)."""
    try:
        return read_claim_text(Path(path).read_text())
    except OSError:
        return None


def is_settled(claim: dict[str, str] | None) -> bool:
    """Whether ``claim`` is a tombstone: its owner's result has been collected."""
    return claim is not None and SETTLED in claim


def same_owner(claim: dict[str, str], owner: dict[str, str]) -> bool:
    """Whether ``claim`` was written by the job ``owner`` (settled or not)."""
    return {k: v for k, v in claim.items() if k != SETTLED} == {k: v for k, v in owner.items() if k != SETTLED}


def claim_task(path: str | Path, owner: dict[str, str]) -> dict[str, str] | None:
    """Claim the task for ``owner``; returns None if it is now ours, else the other job's claim.

    The claim appears atomically with its content (written aside, then hard-linked into place), so a
    reader never sees a half-written one, also on NFS. The claim of another job is returned also when
    it is settled (a tombstone: the task's result was collected). A claim that vanishes between the link
    and the read (a tombstone cleared by the dispatcher) is tried again; one that cannot be read is
    taken over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    aside.write_text(json.dumps(owner, sort_keys=True))
    try:
        for _ in range(4):
            try:
                os.link(aside, path)
                return None
            except FileExistsError:
                pass
            try:
                text = path.read_text()
            except FileNotFoundError:  # removed since the link failed: try again
                continue
            existing = read_claim_text(text)
            if existing is None:  # unreadable: replace it and try again
                path.unlink(missing_ok=True)
                continue
            return None if same_owner(existing, owner) else existing  # a job never loses its own claim
        return read_claim(path)
    finally:
        aside.unlink(missing_ok=True)


def read_claim_text(text: str) -> dict[str, str] | None:
    """A claim from the text of a claim file; None if it is not one."""
    try:
        claim = json.loads(text)
    except ValueError:
        return None
    return claim if isinstance(claim, dict) and "job_id" in claim else None


def _replace(path: Path, content: dict[str, str]) -> None:
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    aside.write_text(json.dumps(content, sort_keys=True))
    os.replace(aside, path)


def settle_claim(path: str | Path, owner: dict[str, str], status: str) -> bool:
    """Mark the claim of ``owner`` as settled with the collected ``status`` (it stays as a tombstone).

    Returns False, changing nothing, if the claim is not ``owner``'s. Called by the dispatcher once it
    has collected the owner's result.
    """
    path = Path(path)
    claim = read_claim(path)
    if claim is None or not same_owner(claim, owner):
        return False
    _replace(path, {**claim, SETTLED: str(status)})
    return True


def clear_settled_claim(path: str | Path) -> dict[str, str] | None:
    """Remove the claim if it is a tombstone (returns it), so that a new attempt at the task runs.
    A live claim, or none, is left as it is (returns None)."""
    path = Path(path)
    claim = read_claim(path)
    if not is_settled(claim):
        return None
    path.unlink(missing_ok=True)
    return claim


def release_dead_claim(path: str | Path, owner: dict[str, str]) -> bool:
    """Remove the live claim of ``owner``, a job that has ended without a result (rule 4). False, changing
    nothing, if the claim is another job's or already settled."""
    path = Path(path)
    claim = read_claim(path)
    if claim is None or is_settled(claim) or not same_owner(claim, owner):
        return False
    path.unlink(missing_ok=True)
    return True


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
