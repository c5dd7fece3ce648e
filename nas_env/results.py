"""The outcome of evaluating one architecture: a plain value that travels from a worker to the store.

A failure (divergence, out-of-memory, time-out, exception, cancellation, preemption) is a result with a
status, never an exception that stops a search. The one exception is a setup error (``Status.SETUP``: a
problem with the machine, data or settings, see :mod:`nas_env.errors`): it would fail every child alike,
so it is never cached and the search stops on it.
"""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from typing import Any


class Status(str, Enum):
    """How an evaluation ended. Only ``OK`` carries a meaningful metric."""

    OK = "ok"
    DIVERGED = "diverged"  # the loss became NaN/inf; training stopped early
    OOM = "oom"  # the child did not fit in memory
    TIMEOUT = "timeout"  # the job exceeded its time limit
    FAILED = "failed"  # the evaluation raised; the traceback is in ``error``
    CANCELLED = "cancelled"  # the job was cancelled (scancel, user)
    PREEMPTED = "preempted"  # the job was preempted and could not be requeued
    NOT_STARTED = "not_started"  # the job never started (e.g. rejected by the scheduler)
    OVER_LIMIT = "over_limit"  # never trained: its cost (params/FLOPs) is above a hard limit (nas_env.cost)
    LOST = "lost"  # the job ended without delivering a result (killed, interrupted); run again, never cached
    SETUP = "setup_error"  # machine, data or settings are wrong (a SetupError): not cacheable, the search stops

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Everything the search needs to know about one evaluation.

    ``metric`` is the quantity the reward is computed from (validation accuracy in [0, 1] for the
    classifiers); ``curve`` holds it per epoch. ``extra`` carries evaluator-specific numbers that an
    agent must never use as reward (e.g. the tabular benchmark's test accuracy).
    """

    status: Status
    reward: float
    metric: float | None = None
    curve: tuple[float, ...] = ()
    params: int | None = None
    flops: int | None = None
    wall_time_s: float = 0.0
    job_id: str | None = None
    error: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def with_updates(self, **changes: Any) -> "EvalResult":
        """A copy with some fields replaced (results are frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        d["curve"] = list(self.curve)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResult":
        d = dict(d)
        d["status"] = Status(d["status"])
        d["curve"] = tuple(float(x) for x in d.get("curve", ()))
        d["extra"] = dict(d.get("extra") or {})
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EvalResult":
        return cls.from_dict(json.loads(text))


def failure(status: Status, error: str | None = None, reward: float = 0.0, **fields: Any) -> EvalResult:
    """Build the result of an evaluation that did not produce a metric."""
    if status is Status.OK:
        raise ValueError("failure() needs a non-OK status")
    return EvalResult(status=status, reward=float(reward), error=error, **fields)
