"""Rank agreement between two rewards of the same architectures: Kendall's tau-b, Spearman's rho, ties and
bootstrap intervals. What says whether a cheap reward orders architectures as an expensive one does.

scipy is not a dependency of this package (see :mod:`evaluation.stats`), so both coefficients are computed
here in their textbook forms with ties handled as scipy's defaults do (tau-b; rho as the Pearson
correlation of average ranks); the tests compare them with scipy where it is installed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["RankAgreement", "average_ranks", "kendall_tau", "rank_agreement", "spearman_rho", "tied_values"]

_CHUNK = 1024  # rows of the pair matrix built at once: memory stays O(_CHUNK * n)


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if a.size != b.size or a.size < 2:
        raise ValueError(f"rank correlations need two samples of the same size >= 2, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("rank correlations need finite values")
    return a, b


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y); NaN when
    either sample is constant. Exact over all pairs, in row blocks (15,625 values take a few seconds)."""
    a, b = _pair(x, y)
    s = tx = ty = 0.0
    for start in range(0, a.size, _CHUNK):
        da = np.sign(a[start : start + _CHUNK, None] - a[None, :])
        db = np.sign(b[start : start + _CHUNK, None] - b[None, :])
        s += float((da * db).sum())
        tx += float(np.abs(da).sum())
        ty += float(np.abs(db).sum())
    return s / math.sqrt(tx * ty) if tx > 0 and ty > 0 else math.nan


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    a = np.asarray(x, dtype=float).ravel()
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(1, a.size + 1)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks; NaN when either sample is constant."""
    a, b = _pair(x, y)
    ra, rb = average_ranks(a) - (a.size + 1) / 2, average_ranks(b) - (b.size + 1) / 2
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum()) / denom if denom > 0 else math.nan


def tied_values(x: Sequence[float]) -> int:
    """How many values equal another value of the sample (0: all distinct)."""
    _, counts = np.unique(np.asarray(x, dtype=float), return_counts=True)
    return int(counts[counts > 1].sum())


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's tau and Spearman's rho of n paired values, each with a percentile bootstrap interval
    (pairs resampled with replacement), and the tied values of each sample."""

    n: int
    tau: float
    tau_low: float
    tau_high: float
    rho: float
    rho_low: float
    rho_high: float
    ties_x: int
    ties_y: int
    confidence: float = 0.95
    resamples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_agreement(
    x: Sequence[float], y: Sequence[float], resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> RankAgreement:
    """Tau, rho and their ``confidence`` percentile bootstrap intervals over ``resamples`` seeded resamples
    of the pairs (resamples where a sample is constant are skipped)."""
    a, b = _pair(x, y)
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(resamples):
        idx = rng.integers(0, a.size, a.size)
        tau = kendall_tau(a[idx], b[idx])
        if not math.isnan(tau):
            taus.append(tau)
            rhos.append(spearman_rho(a[idx], b[idx]))
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    tl, th = np.percentile(taus, q) if taus else (math.nan, math.nan)
    rl, rh = np.percentile(rhos, q) if rhos else (math.nan, math.nan)
    return RankAgreement(int(a.size), kendall_tau(a, b), float(tl), float(th), spearman_rho(a, b), float(rl),
                         float(rh), tied_values(a), tied_values(b), confidence, resamples)  # fmt: skip
