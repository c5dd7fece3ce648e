"""What a REINFORCE controller learned in one run: the probability of each choice at each decision when the
run started and when it ended, and its entropy and baseline over time against random search's flat line.

The probabilities are the controller's marginals, estimated from ``samples`` architectures it draws with a
private generator (the run's own RNG is untouched): for an autoregressive policy the marginal of a decision
is what the search actually proposes there. Random search's line is the uniform distribution, whose entropy
is ``sum log(num_choices)``. "How much reinforcement occurs" is summarised as the mean total-variation
distance between the start and end marginals (0: the policy did not move; 1: every decision switched to a
choice it never took) and as the entropy lost, as a fraction of the uniform entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.search import load_run_agents
from evaluation import plots


@dataclass
class PolicyView:
    """Start and end marginals (decisions x max choices, NaN beyond a decision's choices) and their summary."""

    decisions: list[str]
    num_choices: list[int]
    start: np.ndarray
    end: np.ndarray
    uniform_entropy: float  # nats, random search's policy

    @property
    def moved(self) -> float:
        """Mean total-variation distance between the start and end marginals, over decisions (0..1)."""
        return float(np.nanmean(0.5 * np.nansum(np.abs(self.end - self.start), axis=1)))

    def entropy(self, which: str) -> float:
        """Sum over decisions of the marginal entropies (nats) of ``which`` ("start" or "end")."""
        p = getattr(self, which)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(-np.nansum(np.where(p > 0, p * np.log(p), 0.0)))

    def summary(self) -> dict[str, Any]:
        return {
            "policy_moved_tv": self.moved,
            "marginal_entropy_start": self.entropy("start"),
            "marginal_entropy_end": self.entropy("end"),
            "uniform_entropy": self.uniform_entropy,
            "entropy_lost_fraction": 1.0 - self.entropy("end") / self.uniform_entropy if self.uniform_entropy else 0.0,
        }


def marginals(agent: Any, samples: int = 2000, seed: int = 0) -> np.ndarray:
    """(decisions, max choices) frequencies of each choice among ``samples`` architectures the agent's
    controller draws with its own generator seeded by ``seed``."""
    import torch

    space = agent.space
    with torch.no_grad():
        tokens, _, _ = agent.controller.sample(samples, space, torch.Generator().manual_seed(seed))
    out = np.full((space.num_steps, space.max_choices), np.nan)
    for t, decision in enumerate(space.decisions):
        counts = np.bincount(tokens[:, t].numpy(), minlength=decision.num_choices)
        out[t, : decision.num_choices] = counts / samples
    return out


def policy_view(run_dir: str | Path, samples: int = 2000) -> PolicyView | None:
    """The start and end policy of a run whose agent has a controller (REINFORCE); ``None`` otherwise."""
    agents = load_run_agents(run_dir)
    if agents is None or not hasattr(agents[1], "controller"):
        return None
    start, end = agents
    start.set_space(end.space)  # a curriculum run: compare the decisions of the space it ended in
    space = end.space
    return PolicyView(
        decisions=[d.name for d in space.decisions],
        num_choices=[d.num_choices for d in space.decisions],
        start=marginals(start, samples),
        end=marginals(end, samples),
        uniform_entropy=float(sum(math.log(d.num_choices) for d in space.decisions)),
    )


def plot_policy(view: PolicyView, scalars: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Left: P(choice) per decision at the start and the end (heatmaps). Right: the entropy of the sampled
    architectures and the baseline over told evaluations, with random search's entropy as a flat line."""
    figure = plots.new_figure(4, width=3.6, height=max(3.0, 0.18 * len(view.decisions) + 1.2))
    axes = figure.subplots(1, 4)
    for ax, which in zip(axes[:2], ("start", "end")):
        image = ax.imshow(getattr(view, which), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"P(choice) at the {which}", fontsize="small")
        ax.set_yticks(range(len(view.decisions)), view.decisions, fontsize=6)
        ax.set_xlabel("choice", fontsize="small")
    figure.colorbar(image, ax=axes[1], fraction=0.05)
    entropy, baseline = axes[2], axes[3]
    if "reinforce/entropy" in scalars:
        steps, values = scalars["reinforce/entropy"]
        entropy.plot(steps, values, lw=1.2, label="controller")
    entropy.axhline(view.uniform_entropy, color="grey", ls="--", label="random search")
    entropy.set_title("entropy of a sampled architecture (nats)", fontsize="small")
    entropy.legend(fontsize="small")
    if "reinforce/baseline" in scalars:
        steps, values = scalars["reinforce/baseline"]
        baseline.plot(steps, values, lw=1.2, label="baseline (EMA of rewards)")
    if "search/reward" in scalars:
        steps, values = scalars["search/reward"]
        first = values[: max(1, min(len(values), 10))]
        baseline.axhline(float(np.mean(first)), color="grey", ls="--", label="mean of the first 10 rewards")
    baseline.set_title("baseline", fontsize="small")
    baseline.legend(fontsize="small")
    for ax in (entropy, baseline):
        ax.set_xlabel("told evaluations", fontsize="small")
        ax.grid(alpha=0.3)
    s = view.summary()
    figure.suptitle(f"{title}: policy moved {s['policy_moved_tv']:.2f} (mean TV), entropy lost "
                    f"{100 * s['entropy_lost_fraction']:.0f}% of uniform", fontsize="medium")
    return plots.save(figure, path)


def policy_markdown(view: PolicyView, title: str) -> str:
    """The terminal form: per decision, P of each choice at the start -> at the end, and the summary line."""
    s = view.summary()
    lines = [f"# What the controller learned: {title}", "",
             f"Policy moved {s['policy_moved_tv']:.3f} (mean total variation over decisions; 0 = not at all). "
             f"Marginal entropy {s['marginal_entropy_start']:.2f} -> {s['marginal_entropy_end']:.2f} nats "
             f"(random search: {s['uniform_entropy']:.2f}).", "",
             "| decision | P(choice) at the start | P(choice) at the end |", "|---|---|---|"]
    for name, c, a, b in zip(view.decisions, view.num_choices, view.start, view.end):
        fmt = lambda p: " ".join(f"{x:.2f}" for x in p[:c])  # noqa: E731
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} |")
    return "\n".join(lines) + "\n"
