"""Rank agreement (evaluation.ranking): Kendall's tau-b and Spearman's rho with ties, against scipy where it
is installed and against hand-counted cases, and bootstrap intervals that hold the point estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.ranking import average_ranks, kendall_tau, rank_agreement, spearman_rho, tied_values


def test_hand_counted_cases() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs: (1,2) C, (1,3) C, (2,3) D -> (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert average_ranks([5, 1, 5, 3]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert tied_values([0.3, 0.3, 0.5, 0.1, 0.1, 0.1]) == 5 and tied_values([1, 2, 3]) == 0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(spearman_rho([1, 2, 3], [2, 2, 2]))
    with pytest.raises(ValueError, match="same size"):
        kendall_tau([1, 2], [1, 2, 3])


def test_ties_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (5, 30, 2500):  # 2500 spans several row blocks of the pair matrix
        x = rng.integers(0, 6, n).astype(float)  # many ties, as accuracies on a small validation set have
        y = x + rng.normal(0, 2, n).round(1)
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
        assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_bootstrap_interval_holds_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=0.7, size=30)
    a = rank_agreement(x, y, resamples=300, seed=3)
    assert a.n == 30 and a.tau_low <= a.tau <= a.tau_high and a.rho_low <= a.rho <= a.rho_high
    assert 0 < a.tau_high - a.tau_low < 0.6
    assert a == rank_agreement(x, y, resamples=300, seed=3)
    assert rank_agreement(x, -y, resamples=300).tau_high < 0
