"""Small, dependency-free statistics for comparing searches: Student-t quantiles, mean +- 95% CI, Welch.

scipy is not a dependency of this package, so the Student-t distribution is computed here. For an
integer number of degrees of freedom ``df`` the t CDF has a closed form (Abramowitz & Stegun 26.7.3 and
26.7.4: a finite trigonometric series in ``theta = atan(t / sqrt(df))``), which is exact up to floating
point; the quantile is found by bisection on it (60 halvings: far below 1e-12). The tests check it against
the textbook table (t_{0.975, 1} = 12.706, t_{0.975, 9} = 2.262, t_{0.975, 29} = 2.045, ...). For a
non-integer df (Welch-Satterthwaite) the df is rounded *down*, which widens the interval slightly, i.e.
errs on the conservative side.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np


# ---------------------------------------------------------------------------------------------- Student t
def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer ``df`` >= 1 (exact closed form, A&S 26.7.3-4)."""
    df = _check_df(df)
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:  # A(t|df) = 2/pi [theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)]
        series, term = 0.0, 1.0
        for k in range(1, (df - 1) // 2 + 1):
            series += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        central = 2.0 / math.pi * (theta + sin * math.cos(theta) * series) if df > 1 else 2.0 * theta / math.pi
    else:  # A(t|df) = sin [1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...]
        series, term = 0.0, 1.0
        for k in range(1, df // 2 + 1):
            series += term
            term *= cos2 * (2 * k - 1) / (2 * k)
        central = sin * series
    central = min(max(central, 0.0), 1.0)  # P(|T| < |t|)
    return 0.5 + 0.5 * central if t >= 0 else 0.5 - 0.5 * central


def t_quantile(q: float, df: int | float) -> float:
    """The ``q``-quantile of Student's t with ``df`` degrees of freedom (non-integer df is floored;
    ``df = inf`` gives the normal quantile). Cached: confidence bands ask for the same few values often."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if math.isinf(df):
        return NormalDist().inv_cdf(q)
    return _t_quantile(float(q), _check_df(math.floor(df)))


@functools.lru_cache(maxsize=1024)
def _t_quantile(q: float, df: int) -> float:
    if q < 0.5:
        return -_t_quantile(1.0 - q, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < q:  # bracket: the quantile lies in [high / 2, high]
        low, high = high, 2.0 * high
    for _ in range(60):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _check_df(df: int | float) -> int:
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {df}")
    return int(df)


#: below this a two-sided p-value from ``2 (1 - t_cdf)`` is rounding error (doubles resolve 1 - cdf to ~1e-16)
P_VALUE_FLOOR = 1e-14


def p_text(p: float) -> str:
    """``p = 0.0026`` for a table, or ``p < 1e-14`` where the value is below what the t CDF resolves (never "p = 0")."""
    return f"p < {P_VALUE_FLOOR:.0e}" if p < P_VALUE_FLOOR else f"p = {p:.2g}"


# ---------------------------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class MeanCI:
    """Mean of a sample with its sample standard deviation (ddof=1) and a two-sided t confidence interval."""

    n: int
    mean: float
    std: float
    sem: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return 0.5 * (self.ci_high - self.ci_low)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "half_width": self.half_width}


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    """Mean, std and the ``confidence`` t interval ``mean +- t_{(1+c)/2, n-1} * std / sqrt(n)``.

    One value gives std = 0 and an infinite-width interval is not meaningful, so its bounds are NaN;
    an empty sample is an error.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size == 1:
        return MeanCI(1, mean, 0.0, math.nan, math.nan, math.nan, confidence)
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(x.size)
    half = t_quantile(0.5 + confidence / 2.0, x.size - 1) * sem
    return MeanCI(int(x.size), mean, std, sem, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with Welch's t confidence interval and two-sided p-value (df floored)."""

    diff: float
    ci_low: float
    ci_high: float
    df: float
    p_value: float
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        """One line for a table: ``+0.019 [+0.012, +0.026], p = 3.3e-06``."""
        low, high = f"{self.ci_low:+.{digits}f}", f"{self.ci_high:+.{digits}f}"
        return f"{self.diff:+.{digits}f} [{low}, {high}], {p_text(self.p_value)}"


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Welch's unequal-variance comparison of two independent samples (each of size >= 2).

    The Welch-Satterthwaite df is generally not an integer; it is rounded down for the t distribution,
    which makes the interval a little wider and the p-value a little larger (conservative).
    """
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.size < 2 or y.size < 2:
        raise ValueError(f"welch_difference needs >= 2 values per sample, got {x.size} and {y.size}")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(x.mean() - y.mean())
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return Difference(diff, diff, diff, math.inf, 0.0 if diff != 0 else 1.0, confidence)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    df_used = max(1, math.floor(df))
    half = t_quantile(0.5 + confidence / 2.0, df_used) * se
    p = 2.0 * (1.0 - t_cdf(abs(diff) / se, df_used))
    return Difference(diff, diff - half, diff + half, float(df), float(min(max(p, 0.0), 1.0)), confidence)


def band(matrix: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean and t confidence band of ``matrix`` (runs x points), ignoring NaN entries.

    Returns ``(mean, low, high, n)``; a column with fewer than two values has NaN bounds (and a NaN mean
    when it has none).
    """
    m = np.asarray(matrix, dtype=float)
    n = np.sum(~np.isnan(m), axis=0)
    mean, low, high = (np.full(m.shape[1], math.nan) for _ in range(3))
    for j in range(m.shape[1]):
        column = m[~np.isnan(m[:, j]), j]
        if column.size:
            summary = mean_ci(column, confidence)
            mean[j], low[j], high[j] = summary.mean, summary.ci_low, summary.ci_high
    return mean, low, high, n
