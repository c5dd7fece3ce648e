"""Read a finished search back from its run directory: the told sequence, what it would pick, its curves.

Everything here is recomputed from the run directory's ``store.sqlite`` (and ``config.json``), never from
the search's in-memory state, so a report can be rebuilt at any time and checked against the store.

The *pick* of a run is the architecture with the highest reward (the validation accuracy on NAS-Bench-201)
among everything the agent was told, ties going to the one told first. Its test accuracy (only in
``EvalResult.extra``, never seen by an agent) is what a comparison reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.run_dir import RunDir, SearchConfig
from nas_env.results import EvalResult
from nas_env.store import ResultStore

TEST_KEY = "test_accuracy"  # EvalResult.extra key of the tabular benchmark's test accuracy (in [0, 1])
TIME_KEY = "simulated_train_time_s"  # EvalResult.extra key of the simulated training cost (seconds)


class RunDirError(FileNotFoundError):
    """The path is not a finished (or started) search run directory."""


@dataclass(frozen=True)
class Step:
    """One told evaluation, in the order the agent heard it."""

    seq: int  # 1-based told order
    reward: float
    status: str
    arch_key: str
    arch_json: str
    space_config: dict[str, Any] | None
    cached: bool
    result: EvalResult | None  # the stored result (None if the store lost it, which should not happen)

    @property
    def test_accuracy(self) -> float | None:
        value = None if self.result is None else self.result.extra.get(TEST_KEY)
        return None if value is None else float(value)

    @property
    def simulated_time_s(self) -> float:
        return 0.0 if self.result is None else float(self.result.extra.get(TIME_KEY, 0.0))


@dataclass
class RunTrace:
    """The told sequence of one search, with its config, and what it would pick."""

    run_dir: Path
    config: SearchConfig
    steps: list[Step] = field(default_factory=list)

    # ------------------------------------------------------------------ the pick
    @property
    def num_evaluations(self) -> int:
        return len(self.steps)

    def pick_index(self, upto: int | None = None) -> int:
        """Index (0-based) of the best reward among the first ``upto`` steps; ties -> the first told."""
        rewards = self.rewards()[: upto if upto is not None else len(self.steps)]
        if rewards.size == 0:
            raise ValueError(f"{self.run_dir}: no evaluation was told")
        return int(np.argmax(rewards))  # argmax returns the first maximum

    @property
    def pick(self) -> Step:
        return self.steps[self.pick_index()]

    @property
    def has_test(self) -> bool:
        """Whether every told result carries a test accuracy (tabular benchmarks)."""
        return bool(self.steps) and all(s.test_accuracy is not None for s in self.steps)

    # ------------------------------------------------------------------ arrays
    def rewards(self) -> np.ndarray:
        return np.array([s.reward for s in self.steps], dtype=float)

    def cumulative_time_s(self) -> np.ndarray:
        """Simulated time spent once each step is told (repeats are charged again, as in the Search loop)."""
        return np.cumsum([s.simulated_time_s for s in self.steps], dtype=float)

    def best_so_far(self) -> np.ndarray:
        """Best reward after each told step."""
        return np.maximum.accumulate(self.rewards())

    def picked_test_so_far(self) -> np.ndarray:
        """Test accuracy of the validation-picked architecture after each told step (NaN without test)."""
        rewards = self.rewards()
        tests = np.array([math.nan if s.test_accuracy is None else s.test_accuracy for s in self.steps])
        out = np.empty(len(rewards))
        best, best_test = -math.inf, math.nan
        for i, (reward, test) in enumerate(zip(rewards, tests)):
            if reward > best:  # strictly better: ties keep the first found
                best, best_test = reward, test
            out[i] = best_test
        return out


# ---------------------------------------------------------------------------------------------- loading
def check_run_dir(path: str | Path) -> RunDir:
    """The :class:`RunDir` at ``path``; a :class:`RunDirError` saying what is missing otherwise."""
    run_dir = RunDir(path)
    if not run_dir.path.is_dir():
        raise RunDirError(f"{run_dir.path}: no such run directory")
    if not run_dir.exists():
        raise RunDirError(f"{run_dir.path} is not a search run directory (it has no config.json)")
    if not run_dir.store_path.is_file():
        raise RunDirError(f"{run_dir.path} has no result store (store.sqlite): the search never started")
    return run_dir


def load_trace(path: str | Path) -> RunTrace:
    """Read the config and the told sequence of the search in ``path``.

    The told order comes from the store's ``proposals`` table; every told proposal is joined with its
    stored result by (architecture key, evaluator fingerprint). A store that has evaluations but no told
    proposals (a search that records only results) falls back to the evaluations in arrival order.
    """
    run_dir = check_run_dir(path)
    config = run_dir.read_config()
    store = ResultStore(run_dir.store_path)
    try:
        results = {(e.arch_key, e.fingerprint): e for e in store.evaluations()}
        told = store.told()
        if told:
            steps = [
                Step(
                    seq=int(r.told_seq or i + 1),
                    reward=float(r.reward if r.reward is not None else math.nan),
                    status=str(r.status),
                    arch_key=r.arch_key,
                    arch_json=r.arch_json,
                    space_config=r.space_config,
                    cached=bool(r.cached),
                    result=_result(results.get((r.arch_key, r.fingerprint))),
                )
                for i, r in enumerate(told)
            ]
        else:
            steps = [
                Step(i + 1, float(e.result.reward), e.result.status.value, e.arch_key, e.arch_json, None, False, e.result)
                for i, e in enumerate(results.values())
            ]
    finally:
        store.close()
    return RunTrace(run_dir.path, config, steps)


def _result(stored: Any) -> EvalResult | None:
    return None if stored is None else stored.result
