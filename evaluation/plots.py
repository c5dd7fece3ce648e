"""PNG figures with matplotlib's Agg canvas (no display, no global pyplot state: safe in workers and tests)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.curves import Curve
from evaluation.html import write_atomic

AXIS_LABELS = {"evaluations": "architectures evaluated", "simulated_time_s": "simulated training time (s)"}
QUANTITY_LABELS = {
    "best_reward": "best validation reward so far",
    "picked_test": "test acc. (%) of the validation pick",
}
DPI = 90  # small PNGs for the docs


def new_figure(ncols: int, nrows: int = 1, width: float = 5.2, height: float = 3.8) -> Figure:
    figure = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: Path) -> Path:
    """Save as the format of ``path``'s suffix, atomically (a live report's reader never sees half a file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format=Path(path).suffix.lstrip(".") or "png")
    return write_atomic(path, buffer.getvalue())


def plot_curves(
    curves: Sequence[Curve],
    axis: str,
    path: Path,
    title: str = "",
    test_scale: float = 100.0,
    optimum: dict[str, float] | None = None,
) -> Path:
    """One panel per quantity: each label's mean curve with its shaded confidence band; ``optimum`` maps a
    quantity to a horizontal reference line (already in plotted units)."""
    selected = [c for c in curves if c.axis == axis]
    quantities = list(dict.fromkeys(c.quantity for c in selected))
    figure = new_figure(len(quantities))
    axes = figure.subplots(1, len(quantities), squeeze=False)[0]
    handles: dict[str, object] = {}
    for ax, quantity in zip(axes, quantities):
        scale = test_scale if quantity == "picked_test" else 1.0
        for curve in (c for c in selected if c.quantity == quantity):
            label = f"{curve.label} (n={int(np.max(curve.n))})"
            shown = curve.n >= max(1, np.max(curve.n) / 2)  # early times: too few runs have a value yet
            x, mean, low, high = (a[shown] for a in (curve.x, curve.mean * scale, curve.low * scale, curve.high * scale))
            line, = ax.plot(x, mean, label=label)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
            handles.setdefault(label, line)
        if optimum and quantity in optimum:
            ax.axhline(optimum[quantity], color="k", ls="--", lw=0.8)
            ax.annotate(f"optimum {optimum[quantity]:.4g}", (0.01, optimum[quantity]), xycoords=("axes fraction", "data"),
                        va="bottom", fontsize="small")
        ax.set_xlabel(AXIS_LABELS.get(axis, axis))
        ax.set_ylabel(QUANTITY_LABELS.get(quantity, quantity))
        _zoom(ax, [c for c in selected if c.quantity == quantity], scale, optimum.get(quantity) if optimum else None)
        ax.grid(alpha=0.3)
    # one legend for all panels, below them: it never hides the curves' ends
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 4), fontsize="small")
    if title:
        figure.suptitle(title + " (mean, shaded: 95% CI of the mean)", fontsize="medium")
    return save(figure, path)


def _zoom(ax: object, curves: Sequence[Curve], scale: float, optimum: float | None) -> None:
    """Show the interesting part: the bands after the first 10% of the axis (early bands are wide)."""
    lows, highs = [], []
    for curve in curves:
        start = int(0.1 * len(curve.x))
        low, high = curve.low[start:] * scale, curve.high[start:] * scale
        lows.append(np.nanmin(low) if np.any(np.isfinite(low)) else math.nan)
        highs.append(np.nanmax(high) if np.any(np.isfinite(high)) else math.nan)
    if optimum is not None:
        highs.append(optimum)
    low, high = np.nanmin(lows + [math.inf]), np.nanmax(highs + [-math.inf])
    if np.isfinite(low) and np.isfinite(high) and high > low:
        pad = 0.05 * (high - low)
        ax.set_ylim(low - pad, high + pad)  # type: ignore[attr-defined]


def plot_final_boxplot(values: dict[str, Sequence[float]], path: Path, ylabel: str, reference: float | None = None) -> Path:
    """Distribution of one final number (e.g. the picked test accuracy) per label, as boxplots with points."""
    figure = new_figure(1, width=1.6 + 1.3 * len(values))
    ax = figure.subplots()
    labels = list(values)
    ax.boxplot([list(values[k]) for k in labels], showmeans=True, showfliers=False)  # every point is drawn
    ax.set_xticks(range(1, len(labels) + 1), labels)
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for i, k in enumerate(labels, 1):
        ys = np.asarray(values[k], dtype=float)
        ax.scatter(i + rng.uniform(-0.15, 0.15, ys.size), ys, s=6, alpha=0.35, color="gray")
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=0.8, label=f"optimum {reference:.4g}")
        ax.legend(fontsize="small")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    return save(figure, path)


def plot_run(
    seq: np.ndarray,
    rewards: np.ndarray,
    best: np.ndarray,
    failed: np.ndarray,
    path: Path,
    title: str,
    picked_test: np.ndarray | None = None,
) -> Path:
    """Best-so-far curve of one run (and the test accuracy of the validation-picked architecture)."""
    figure = new_figure(1)
    ax = figure.subplots()
    ax.plot(seq, best, drawstyle="steps-post", label="best reward so far")
    ax.scatter(seq[~failed], rewards[~failed], s=8, alpha=0.4, label="reward")
    if failed.any():
        ax.scatter(seq[failed], rewards[failed], s=14, marker="x", color="red", label="failed")
    if picked_test is not None:
        ax.plot(seq, picked_test, drawstyle="steps-post", ls="--", label="test acc. of the pick (in [0, 1])")
    ax.set_xlabel("architectures evaluated (told order)")
    ax.set_ylabel("reward")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return save(figure, path)


def plot_reward_distribution(seq: np.ndarray, rewards: np.ndarray, windows: int, rolling: int, path: Path, title: str) -> Path:
    """Rewards over time: a scatter with a rolling mean (left) and boxplots per window of evaluations (right)."""
    figure = new_figure(2)
    left, right = figure.subplots(1, 2)
    left.scatter(seq, rewards, s=8, alpha=0.4, label="reward")
    if rewards.size >= rolling:
        kernel = np.ones(rolling) / rolling
        left.plot(seq[rolling - 1 :], np.convolve(rewards, kernel, mode="valid"), color="C1", label=f"rolling mean ({rolling})")
    left.set_xlabel("architectures evaluated (told order)")
    left.set_ylabel("reward")
    left.grid(alpha=0.3)
    left.legend(fontsize="small", loc="lower right")
    chunks = [c for c in np.array_split(np.arange(rewards.size), windows) if c.size]
    right.boxplot([rewards[c] for c in chunks], showmeans=True)
    right.set_xticks(range(1, len(chunks) + 1), [f"{c[0] + 1}-{c[-1] + 1}" for c in chunks], rotation=45, fontsize="small")
    right.set_xlabel("window of evaluations")
    right.set_ylabel("reward")
    right.grid(alpha=0.3, axis="y")
    figure.suptitle(title, fontsize="medium")
    return save(figure, path)


def plot_scalars(series: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One small panel per named scalar (``name -> (steps, values)``), e.g. REINFORCE's baseline and entropy."""
    names = list(series)
    ncols = min(3, max(1, len(names)))
    nrows = math.ceil(len(names) / ncols)
    figure = new_figure(ncols, nrows, width=4.0, height=2.6)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        steps, values = series[name]
        ax.plot(steps, values, lw=1.2, marker="." if len(steps) < 60 else None)
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("told evaluations", fontsize="small")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize="small")
    for ax in axes[len(names):]:
        ax.set_axis_off()
    figure.suptitle(title, fontsize="medium")
    return save(figure, path)


def plot_pareto(cost: np.ndarray, score: np.ndarray, front: list[int], path: Path, xlabel: str, ylabel: str,
                title: str) -> Path:
    """Every architecture's (cost, score) with the non-dominated ones (``front``, by increasing cost) joined."""
    figure = new_figure(1)
    ax = figure.subplots()
    ax.scatter(cost, score, s=10, alpha=0.45, label="architecture")
    if front:
        ax.plot(cost[front], score[front], drawstyle="steps-post", color="C3", lw=1.2)
        ax.scatter(cost[front], score[front], s=22, color="C3", zorder=3, label=f"Pareto front ({len(front)})")
    if np.all(cost > 0) and cost.size and cost.max() / max(cost.min(), 1e-12) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return save(figure, path)


def plot_reach(
    panels: dict[tuple[str, str], dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str = ""
) -> Path:
    """Time to threshold: one panel per (axis, threshold), each label's fraction of runs that has reached the
    threshold by x (a step curve). ``panels[(axis, threshold)][label] = (x, fraction)``."""
    axes_names = list(dict.fromkeys(a for a, _ in panels))
    thresholds = list(dict.fromkeys(t for _, t in panels))
    figure = new_figure(len(thresholds), len(axes_names), width=4.2, height=3.2)
    grid = figure.subplots(len(axes_names), len(thresholds), squeeze=False)
    handles: dict[str, object] = {}
    for r, axis in enumerate(axes_names):
        for c, threshold in enumerate(thresholds):
            ax = grid[r][c]
            for label, (x, fraction) in panels.get((axis, threshold), {}).items():
                line, = ax.step(x, 100.0 * fraction, where="post", label=label)
                handles.setdefault(label, line)
            ax.set_title(threshold, fontsize="medium")
            ax.set_xlabel(AXIS_LABELS.get(axis, axis))
            ax.set_ylabel("% of runs that got there")
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 5), fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return save(figure, path)
