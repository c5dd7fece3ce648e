"""Best-so-far curves of many runs on a common axis, with their mean and 95% confidence band.

Two axes:

* **evaluations** (1, 2, ..., the longest run): runs that stopped earlier (a simulated-time budget ends
  runs after different numbers of evaluations) keep their final value, i.e. what they would report;
* **simulated time** (a grid from 0 to the end of the longest run, just past the time budget): the value
  at time t uses only evaluations whose cumulative simulated training time is <= t; before a run's first
  evaluation completes it has no value (NaN) and does not count towards that point's mean.

Two quantities: the best validation reward so far, and the test accuracy of the architecture picked by
validation so far (ties: first found).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from evaluation.stats import band
from evaluation.traces import RunTrace

QUANTITIES: dict[str, Callable[[RunTrace], np.ndarray]] = {
    "best_reward": RunTrace.best_so_far,
    "picked_test": RunTrace.picked_test_so_far,
}


@dataclass(frozen=True)
class Curve:
    """The mean and confidence band of one quantity of one group of runs along one axis."""

    label: str
    quantity: str
    axis: str  # "evaluations" or "simulated_time_s"
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray  # runs contributing to each point


def by_evaluations(traces: Sequence[RunTrace], quantity: str, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, matrix)``: x = 1..length, matrix[r, i] = the quantity of run r after i + 1 evaluations
    (carried forward after the run ended)."""
    length = length or max(t.num_evaluations for t in traces)
    matrix = np.full((len(traces), length), math.nan)
    for r, trace in enumerate(traces):
        values = QUANTITIES[quantity](trace)[:length]
        if values.size:
            matrix[r, : values.size] = values
            matrix[r, values.size :] = values[-1]
    return np.arange(1, length + 1, dtype=float), matrix


def by_time(traces: Sequence[RunTrace], quantity: str, grid: np.ndarray) -> np.ndarray:
    """matrix[r, j] = the quantity of run r once ``grid[j]`` simulated seconds are spent (NaN before its
    first evaluation)."""
    matrix = np.full((len(traces), len(grid)), math.nan)
    for r, trace in enumerate(traces):
        values = QUANTITIES[quantity](trace)
        done = np.searchsorted(trace.cumulative_time_s(), grid, side="right") - 1  # last step told by t
        ok = done >= 0
        matrix[r, ok] = values[done[ok]]
    return matrix


def time_grid(traces: Sequence[RunTrace], limit_s: float | None, points: int = 201) -> np.ndarray:
    """``points`` evenly spaced times from 0 to the end of the longest run. A run stops asking once its
    time budget ``limit_s`` is spent, but the evaluation that crosses it still counts (as in the search loop
    and in NB201's own code), so runs end a little after ``limit_s``; the grid's last point covers every
    evaluation, and the curves end exactly at the values of the table."""
    longest = max(float(t.cumulative_time_s()[-1]) for t in traces if t.steps)
    end = longest if limit_s is None else max(limit_s, longest)
    return np.linspace(0.0, end, points)


def has_simulated_time(traces: Sequence[RunTrace]) -> bool:
    return all(t.steps and t.cumulative_time_s()[-1] > 0 for t in traces)


def group_curves(
    groups: dict[str, Sequence[RunTrace]],
    quantities: Sequence[str],
    time_limit_s: float | None = None,
    confidence: float = 0.95,
) -> list[Curve]:
    """Curves of every group (label -> its runs) for ``quantities``, on the evaluation axis and, when every
    run has simulated times, on the simulated-time axis. All groups share each axis' grid."""
    all_traces = [t for traces in groups.values() for t in traces]
    length = max(t.num_evaluations for t in all_traces)
    grid = time_grid(all_traces, time_limit_s) if has_simulated_time(all_traces) else None
    curves: list[Curve] = []
    for label, traces in groups.items():
        for quantity in quantities:
            x, matrix = by_evaluations(traces, quantity, length)
            curves.append(Curve(label, quantity, "evaluations", x, *band(matrix, confidence)))
            if grid is not None:
                curves.append(Curve(label, quantity, "simulated_time_s", grid, *band(by_time(traces, quantity, grid), confidence)))
    return curves
