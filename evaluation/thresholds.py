"""Time to threshold: how many evaluations (and how much simulated training time) a search needs before it
first evaluates an architecture in the top 1%, the top 0.1%, or at the optimum of the NAS-Bench-201 table.

The thresholds come from the table's validation column at the environment's fidelity (the quantity the
reward is made of), so they are the same for every agent; an evaluated architecture counts by its *table*
value, not by its reward, so noise or a cost-aware reward cannot move the goalposts. The top 1% of the
15,625 cells are the 157 best (``ceil(0.01 * 15625)``), their threshold the 157th best value; cells tying
with it count too. The top 0.1% are the 16 best; the optimum is the best value (every cell that ties with it).

Per agent and threshold: the fraction of runs that got there, the median number of evaluations over *all*
runs (a run that never got there counts as infinitely slow, so the median exists only when at least half the
runs got there) and the mean over the runs that got there; the same for simulated training time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from evaluation.traces import RunTrace

#: (name, fraction of the table) of the thresholds; None: the optimum
LEVELS: tuple[tuple[str, float | None], ...] = (("top 1%", 0.01), ("top 0.1%", 0.001), ("optimum", None))


@dataclass(frozen=True)
class Threshold:
    """One level: the table's validation value (in [0, 1]) an architecture must reach, and how many do."""

    name: str
    fraction: float | None
    value: float
    count: int


@dataclass(frozen=True)
class TableThresholds:
    """The thresholds of one NB201 column, with the column (values in [0, 1], by official index)."""

    column: str
    values: np.ndarray
    levels: tuple[Threshold, ...]


def table_thresholds(env_id: str, env_kwargs: dict[str, Any]) -> TableThresholds | None:
    """The thresholds of the NB201 table behind ``env_id`` (None for an environment that is not a table)."""
    from agents.core import make_env_parts
    from nas_env.cost import base_evaluator
    from nas_env.tabular import TabularEvaluator

    _, evaluator, _ = make_env_parts(env_id, env_kwargs)
    evaluator = base_evaluator(evaluator)
    if not isinstance(evaluator, TabularEvaluator):
        return None
    column = evaluator.spec.valid_column(evaluator.fidelity)
    values = np.asarray(evaluator.table().column(column), dtype=float) / 100.0
    return TableThresholds(column, values, thresholds_of(values))


def thresholds_of(values: np.ndarray) -> tuple[Threshold, ...]:
    """The :data:`LEVELS` of a column of values (higher is better)."""
    ordered = np.sort(np.asarray(values, dtype=float))[::-1]
    out = []
    for name, fraction in LEVELS:
        k = 1 if fraction is None else max(1, math.ceil(fraction * ordered.size))
        value = float(ordered[k - 1])
        out.append(Threshold(name, fraction, value, int(np.sum(ordered >= value))))
    return tuple(out)


def first_reach(trace: RunTrace, values: np.ndarray, value: float) -> tuple[int, float] | None:
    """``(evaluations, simulated seconds)`` when the run first evaluated a cell with table value >= ``value``
    (1-based: the evaluation that reached it counts), or None if it never did."""
    times = trace.cumulative_time_s()
    for i, step in enumerate(trace.steps):
        index = None if step.result is None else step.result.extra.get("nb201_index")
        if index is not None and values[int(index)] >= value:
            return i + 1, float(times[i])
    return None


def run_reaches(trace: RunTrace, table: TableThresholds) -> dict[str, tuple[int, float] | None]:
    """Threshold name -> :func:`first_reach` of one run."""
    return {t.name: first_reach(trace, table.values, t.value) for t in table.levels}


def _median_censored(values: Sequence[float | None]) -> float | None:
    """Median with runs that never got there as +inf; None when that median is infinite."""
    x = np.array([math.inf if v is None else float(v) for v in values])
    if x.size == 0:
        return None
    m = float(np.median(x))
    return m if math.isfinite(m) else None


def agent_rows(label: str, reaches: Sequence[dict[str, tuple[int, float] | None]], table: TableThresholds) -> list[dict[str, Any]]:
    """One row per threshold for one agent's runs."""
    rows = []
    for t in table.levels:
        hits = [r[t.name] for r in reaches]
        got = [h for h in hits if h is not None]
        rows.append({
            "label": label,
            "threshold": t.name,
            "threshold_value": t.value,
            "cells_at_or_above": t.count,
            "runs": len(hits),
            "reached": len(got) / len(hits) if hits else math.nan,
            "evals_median": _median_censored([None if h is None else h[0] for h in hits]),
            "evals_mean_reached": float(np.mean([h[0] for h in got])) if got else None,
            "time_median_s": _median_censored([None if h is None else h[1] for h in hits]),
            "time_mean_reached_s": float(np.mean([h[1] for h in got])) if got else None,
        })
    return rows


def reach_curves(reaches: Sequence[dict[str, tuple[int, float] | None]], name: str, axis: int,
                 grid: np.ndarray) -> np.ndarray:
    """Fraction of runs that reached threshold ``name`` by each point of ``grid`` (axis 0: evaluations,
    1: simulated seconds)."""
    hits = np.array([math.inf if r[name] is None else r[name][axis] for r in reaches], dtype=float)
    return np.array([float(np.mean(hits <= g)) for g in grid]) if hits.size else np.zeros(len(grid))
