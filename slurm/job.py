"""The function every child job runs: evaluate one architecture, checkpointing to a file of its own.

It is a small importable :class:`submitit.helpers.Checkpointable`: on a preemption or time-out signal
submitit calls :meth:`checkpoint`, which requeues the same call; the evaluator then resumes from the
checkpoint file it has been writing (see ``Evaluator.evaluate(arch, checkpoint_path)``).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import types
from pathlib import Path
from typing import Any

import submitit
from submitit.core.job_environment import JobEnvironment, SignalHandler

from nas_env.crash_points import crash_point
from nas_env.evaluators import Evaluator
from nas_env.results import EvalResult
from nas_env.spaces.base import Architecture
from slurm.claims import claim_task, current_job_claim, duplicate_result


def _task_file(folder: str | Path, subfolder: str, key: str, suffix: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", key)[:40].strip("-.") or "task"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(folder) / subfolder / f"{slug}-{digest}{suffix}"


def checkpoint_path(folder: str | Path, key: str) -> Path:
    """The checkpoint file of the task ``key`` under the dispatcher folder (stable across driver restarts).

    Deleted when the task succeeds; kept after a failure, so a resubmission of the same key resumes.
    """
    return _task_file(folder, "checkpoints", key, ".ckpt")


def claim_path(folder: str | Path, key: str) -> Path:
    """The claim file of the task ``key`` (see :mod:`slurm.claims`): which job owns it; kept as a tombstone
    once its result is collected."""
    return _task_file(folder, "claims", key, ".json")


def handle_preemption_once() -> None:
    """Let submitit's checkpoint-and-requeue signal handler run at most once in this job process.

    SLURM signals every process of a job step, and 22.05 delivers a step signal twice to an array
    task whose siblings are pending. A repeat would re-enter submitit's handler or kill the
    ``scontrol requeue`` it runs, and a requeued run would end as a failure. So the first signal
    switches the preemption signal (and SIGTERM, which submitit only logs) to SIG_IGN, which the
    ``scontrol`` child inherits, before handing over to submitit.
    """
    try:
        sig = JobEnvironment._usr_sig()
        handler = signal.getsignal(sig)
    except (RuntimeError, ValueError):
        return
    if not isinstance(getattr(handler, "__self__", None), SignalHandler):
        return  # not submitit's handler: not inside a submitit job, or already wrapped

    def once(signum: int, frame: types.FrameType | None) -> Any:
        for repeat in (signum, signal.SIGTERM):
            signal.signal(repeat, signal.SIG_IGN)
        return handler(signum, frame)

    try:
        signal.signal(sig, once)
    except ValueError:  # not the main thread
        pass


def use_threads(threads: int | None) -> None:
    """Give torch ``threads`` intra-op threads in this job, unless ``OMP_NUM_THREADS`` is set (the user's
    choice wins) or ``threads`` is None (torch's default: every core it sees)."""
    if threads and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(threads)


class EvaluateTask(submitit.helpers.Checkpointable):
    """``evaluator.evaluate(arch, checkpoint_path=...)`` as a picklable, requeueable job function.

    With a ``claim_path``, the job first claims the task; if another job owns it, the job returns at
    once with a duplicate result instead of training the same child a second time. ``threads``: torch's
    threads in the job (see :func:`use_threads`; the backend's share of the cores per child).
    """

    def __init__(
        self,
        key: str,
        evaluator: Evaluator,
        arch: Architecture,
        checkpoint_path: str,
        claim_path: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.key = key
        self.evaluator = evaluator
        self.arch = arch
        self.checkpoint_path = checkpoint_path
        self.claim_path = claim_path
        self.threads = threads

    def __call__(self) -> EvalResult:
        """Run inside a submitit job (local subprocess or SLURM)."""
        handle_preemption_once()
        use_threads(getattr(self, "threads", None))  # a task pickled before threads existed has none
        me = current_job_claim()
        if self.claim_path is not None and me is not None:
            owner = claim_task(self.claim_path, me)
            if owner is not None:
                return duplicate_result(owner, self.evaluator.failure_reward)
        result = self.evaluate()
        # trained, not yet handed to submitit to be written: a job killed here leaves no result pickle
        crash_point("worker.result")
        return result

    def evaluate(self) -> EvalResult:
        """The evaluation itself, without touching signal handlers (the inline executor calls this)."""
        Path(self.checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
        return self.evaluator.evaluate(self.arch, checkpoint_path=self.checkpoint_path)

    def __repr__(self) -> str:
        return f"EvaluateTask(key={self.key!r}, evaluator={type(self.evaluator).__name__})"
