"""The ``inline`` executor: run each child in this process, synchronously, at submit time (for debugging).

Unlike submitit's DebugExecutor it never opens pdb: an exception becomes a result with its traceback,
its status from :func:`nas_env.failures.classify` (OOM, SETUP or FAILED). Results are written to the folder in submitit's pickle format, so ``poll()`` and
``reattach()`` work exactly as for the other executors.
"""

from __future__ import annotations

import traceback
import uuid
from typing import Any, Sequence

from submitit.core.utils import DelayedSubmission, JobPaths, cloudpickle_dump

import slurm.faults as faults
from nas_env.failures import classify
from nas_env.results import EvalResult, failure
from slurm.backend import Backend, JobRecord, load_function
from slurm.job import EvaluateTask


class InlineBackend(Backend):
    """Runs the job functions one after another inside ``submit()``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refresh_interval_s = 0.0  # nothing to query: results are on disk when submit() returns
        self.jobs_folder = self.folder / "inline"

    def _paths(self, job_id: str) -> JobPaths:
        return JobPaths(self.jobs_folder, job_id=job_id, task_id=0)

    def check(self) -> None:
        self.jobs_folder.mkdir(parents=True, exist_ok=True)

    def submit(self, functions: Sequence[EvaluateTask]) -> list[tuple[str, Any]]:
        self.jobs_folder.mkdir(parents=True, exist_ok=True)
        out = []
        for function in functions:
            job_id = f"inline-{uuid.uuid4().hex[:12]}"
            paths = self._paths(job_id)
            DelayedSubmission(function).dump(paths.submitted_pickle)
            try:
                outcome: tuple[str, Any] = ("success", function.evaluate())
            except Exception as exc:  # noqa: BLE001 - every failure of a child is a result
                result = failure(classify(exc), error=traceback.format_exc(), reward=function.evaluator.failure_reward)
                outcome = ("success", result)
            tmp = paths.result_pickle.with_suffix(".tmp")
            cloudpickle_dump(outcome, tmp)
            tmp.replace(paths.result_pickle)
            out.append((job_id, None))
        return out

    def attach(self, job_id: str) -> tuple[Any, EvaluateTask | None]:
        return None, load_function(self._paths(job_id).submitted_pickle)

    def refresh(self, records: Sequence[JobRecord]) -> None:
        self.calls += 1

    def outcome(self, record: JobRecord, now: float) -> EvalResult | None:
        outcome = faults.read_outcome(self._paths(record.job_id).result_pickle)
        if outcome is None:
            return faults.not_started(f"no result for inline job {record.job_id}", record.failure_reward, record.job_id)
        return faults.from_outcome(outcome, record.failure_reward, record.job_id)

    def cancel(self, record: JobRecord) -> None:
        """Inline children have already run; there is nothing to stop."""
