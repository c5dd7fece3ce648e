"""NAS-Bench-201 comparison under the benchmark's own protocol, next to the published numbers.

Protocol (Dong & Yang, ICLR 2020, section 5 / the NB201 code): search CIFAR-10 with the 12-epoch
validation accuracy of ``cifar10-valid`` as reward, stop once the simulated training time of the evaluated
cells reaches 12,000 s, and report the 200-epoch CIFAR-10 test accuracy of the architecture with the best
validation accuracy. Regularized evolution uses the NB201/NATS-Bench scripts' settings (population 10,
tournament sample 3).

Two commands:

* ``run``: the comparison (``nas compare`` with the protocol's settings) on seeds 0..N-1, then a table with
  the published mean +- std beside ours, and the figures copied into ``--figures``;
* ``tune``: REINFORCE settings against each other on separate tuning seeds (1000+ by default), ranked by
  the mean final best VALIDATION reward only (test accuracy is never used to choose).

    python benchmarks/compare_nb201.py run --seeds 100 --out runs/nb201 --figures docs/figures
    python benchmarks/compare_nb201.py tune --grid lr-batch --seeds 1000..1019 --out runs/nb201-tune
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.reinforce import PPOReinforceAgent
from evaluation import plots
from nas_cli.evaluation import parse_seeds
from evaluation.compare import AgentSpec, CompareSpec, run_compare
from evaluation.report import load_compare_traces
from evaluation.stats import band, p_text, welch_difference
from evaluation.traces import RunTrace

ENV_ID = "NAS-Bench-201-v0"
ENV_KWARGS: dict[str, Any] = {"dataset": "cifar10-valid", "fidelity": 12}
SIMULATED_TIME_S = 12_000.0
BUDGET = 1000  # never reached: the simulated-time budget ends every run after ~100-120 cells
REA_KWARGS: dict[str, Any] = {"population_size": 10, "sample_size": 3}  # NB201 / NATS-Bench R-EA scripts
#: REINFORCE settings chosen by `tune` on seeds 1000..1069 (validation reward only; grids below, results in
#: docs/nb201_comparison.md): one update per architecture, larger steps, an entropy bonus against collapse
REINFORCE_KWARGS: dict[str, Any] = {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01, "grad_clip": 1.0}

#: NB201 paper, Table 5 (CIFAR-10 test accuracy, mean +- std over 500 runs, same protocol)
PUBLISHED: dict[str, tuple[float, float]] = {"reinforce": (93.85, 0.37), "random": (93.70, 0.36), "evolution": (93.92, 0.30)}
PUBLISHED_OPTIMUM = 94.37

#: REINFORCE settings compared by `tune`, by grid name (label -> agent_kwargs)
GRIDS: dict[str, dict[str, dict[str, Any]]] = {
    "lr-batch": {
        "paper": {},  # lr 6e-4, m = 8, baseline decay 0.95: Zoph & Le's defaults
        **{
            f"lr{lr:g}-m{m}": {"lr": lr, "batch_size": m, "baseline_decay": 0.9}
            for lr in (0.005, 0.01, 0.02, 0.05)
            for m in (1, 2, 4)
        },
    },
    # around the best of "lr-batch" (lr 0.01, m = 1, baseline decay 0.9): the baseline, exploration
    "around-best": {
        "lr0.01-m1": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9},
        "bd0.8": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.8},
        "bd0.95": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.95},
        "ent0.003": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.003},
        "ent0.01": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01},
        "lr0.02-ent0.01": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01},
        "tanh1.5": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9, "tanh_constant": 1.5},
        "tanh2.5": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9, "tanh_constant": 2.5},
        "lr0.02-tanh1.5": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "tanh_constant": 1.5},
        "temp2": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9, "temperature": 2.0},
        "m4-ent0.01": {"lr": 0.01, "batch_size": 4, "baseline_decay": 0.9, "entropy_coef": 0.01},
    },
    # the best of "around-best" (lr 0.02 with an entropy bonus): larger steps, more entropy
    "lr-entropy": {
        "lr0.02-ent0.01": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01},
        "lr0.02-ent0.02": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.02},
        "lr0.03-ent0.01": {"lr": 0.03, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01},
        "lr0.03-ent0.02": {"lr": 0.03, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.02},
        "lr0.05-ent0.02": {"lr": 0.05, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.02},
        "lr0.05-ent0.05": {"lr": 0.05, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.05},
        "lr0.02-ent0.01-bd0.95": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.95, "entropy_coef": 0.01},
        "lr0.02-ent0.01-m2": {"lr": 0.02, "batch_size": 2, "baseline_decay": 0.9, "entropy_coef": 0.01},
        "lr0.02-ent0.01-clip1": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01, "grad_clip": 1.0},
    },
    # the leaders of the three grids above, on 50 fresh tuning seeds (1020..1069) with the baselines
    "confirm": {
        "lr0.02-ent0.01": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01},
        "lr0.02-ent0.01-clip1": {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01, "grad_clip": 1.0},
        "tanh1.5": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9, "tanh_constant": 1.5},
        "bd0.95": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.95},
        "lr0.01-m1": {"lr": 0.01, "batch_size": 1, "baseline_decay": 0.9},
    },
}

_BASE = dict(REINFORCE_KWARGS)  # the settings tuned before the options existed
#: the controller's options (agents/reinforce.py), each added to the tuned settings above, then combined
GRIDS["options"] = {
    "base": dict(_BASE),
    "heads": {**_BASE, "per_decision_heads": True},
    "norepeat": {**_BASE, "no_repeat": True},
    "heads-norepeat": {**_BASE, "per_decision_heads": True, "no_repeat": True},
    "hn-advnorm-lr0.005": {**_BASE, "per_decision_heads": True, "no_repeat": True, "advantage_norm": True, "lr": 0.005},
    "hn-advnorm-lr0.01": {**_BASE, "per_decision_heads": True, "no_repeat": True, "advantage_norm": True, "lr": 0.01},
    "hn-ppo4-m4": {**_BASE, "per_decision_heads": True, "no_repeat": True, "ppo_clip": 0.2, "ppo_epochs": 4,
                   "batch_size": 4, "advantage_norm": True, "lr": 0.005},
    "hn-importance2": {**_BASE, "per_decision_heads": True, "no_repeat": True, "importance_clip": 2.0},
    "hn-entsched": {**_BASE, "per_decision_heads": True, "no_repeat": True, "entropy_coef": 0.02,
                    "entropy_coef_end": 0.0, "schedule_evaluations": 100},
}

_NR = {**_BASE, "no_repeat": True}
#: around the leaders of "options" (shared heads, no repeats): exploit towards the end of the budget, normalised
#: advantages, PPO, steps
GRIDS["options2"] = {
    "nr-entsched": {**_NR, "entropy_coef": 0.02, "entropy_coef_end": 0.0, "schedule_evaluations": 100},
    "nr-entsched0.05": {**_NR, "entropy_coef": 0.05, "entropy_coef_end": 0.0, "schedule_evaluations": 100},
    "nr-advnorm-lr0.01": {**_NR, "advantage_norm": True, "lr": 0.01},
    "nr-advnorm-lr0.005": {**_NR, "advantage_norm": True, "lr": 0.005},
    "nr-ppo2-m2": {**_NR, "ppo_clip": 0.2, "ppo_epochs": 2, "batch_size": 2, "advantage_norm": True, "lr": 0.01},
    "nr-lr0.03-ent0.02": {**_NR, "lr": 0.03, "entropy_coef": 0.02},
    "nr-bd0.8": {**_NR, "baseline_decay": 0.8},
    "nr-tanh1.5": {**_NR, "tanh_constant": 1.5},
}

#: the leaders of "options2" on 50 fresh tuning seeds (1020..1069; REA, random search and the settings tuned before
#: the options ran on these seeds in the "confirm" grid: the runs are deterministic, so they are not repeated)
GRIDS["confirm2"] = {
    "nr-tanh1.5": {**_NR, "tanh_constant": 1.5},
    "nr-bd0.8": {**_NR, "baseline_decay": 0.8},
    "nr-lr0.03-ent0.02": {**_NR, "lr": 0.03, "entropy_coef": 0.02},
    "nr-tanh1.5-bd0.8": {**_NR, "tanh_constant": 1.5, "baseline_decay": 0.8},
}

#: per-decision offsets on the shared heads (decision_offsets): the shared heads' prior plus what each edge learns
GRIDS["offsets"] = {
    "nr-offsets": {**_NR, "decision_offsets": True},
    "nr-tanh1.5-offsets": {**_NR, "tanh_constant": 1.5, "decision_offsets": True},
    "nr-bd0.8-offsets": {**_NR, "baseline_decay": 0.8, "decision_offsets": True},
}

#: the leaders of "offsets" on the 50 fresh tuning seeds 1020..1069
GRIDS["confirm3"] = {
    "nr-tanh1.5-offsets": {**_NR, "tanh_constant": 1.5, "decision_offsets": True},
    "nr-bd0.8-offsets": {**_NR, "baseline_decay": 0.8, "decision_offsets": True},
}

#: `reinforce-tuned` as the grids below measured it, before it took self-imitation (the last grid's choice)
_TUNED = {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.8, "entropy_coef": 0.01, "grad_clip": 1.0,
          "no_repeat": True, "decision_offsets": True}
#: one change at a time around `reinforce-tuned`, on all 70 tuning seeds (1000..1069)
GRIDS["around-tuned"] = {
    "reinforce-tuned": dict(_TUNED),
    "lr0.01": {**_TUNED, "lr": 0.01},
    "lr0.03": {**_TUNED, "lr": 0.03},
    "ent0.005": {**_TUNED, "entropy_coef": 0.005},
    "ent0.02": {**_TUNED, "entropy_coef": 0.02},
    "lr0.03-ent0.02": {**_TUNED, "lr": 0.03, "entropy_coef": 0.02},
    "bd0.7": {**_TUNED, "baseline_decay": 0.7},
    "bd0.9": {**_TUNED, "baseline_decay": 0.9},
    "tanh1.5": {**_TUNED, "tanh_constant": 1.5},
    "tanh2.5": {**_TUNED, "tanh_constant": 2.5},
    "clip0.5": {**_TUNED, "grad_clip": 0.5},
    "clip2": {**_TUNED, "grad_clip": 2.0},
    "hidden64": {**_TUNED, "hidden_size": 64},
    "hidden100": {**_TUNED, "hidden_size": 100},
    "layers1": {**_TUNED, "lstm_layers": 1},
    "temp1.5": {**_TUNED, "temperature": 1.5},
}

#: the leaders of "around-tuned" against `reinforce-tuned` on 100 fresh tuning seeds (1070..1169)
GRIDS["confirm-tuned"] = {
    label: GRIDS["around-tuned"][label] for label in ("reinforce-tuned", "clip2", "layers1", "bd0.7")
}

#: `reinforce-ppo` (the settings for ~1,000 evaluations, chosen on NAS-Synthetic-v0) in a ~100-cell NB201 search:
#: as named, and with its entropy schedule set to the ~100 evaluations the protocol affords
GRIDS["ppo"] = {
    "reinforce-ppo": dict(PPOReinforceAgent.defaults),
    "reinforce-ppo-schedule100": {**PPOReinforceAgent.defaults, "schedule_evaluations": 100},
}

#: `reinforce-tuned` with the clipped update on a sliding window: after every architecture, clipped steps on the last
#: `ppo_window` told architectures (their advantages as when told), so the first updates come at once and each
#: reward is reused while it stays within the clip
_WINDOW = {**_TUNED, "ppo_clip": 0.2}
GRIDS["window"] = {
    "reinforce-tuned": dict(_TUNED),
    "w16-e4-an-ent0": {**_WINDOW, "ppo_window": 16, "ppo_epochs": 4, "lr": 0.01, "advantage_norm": True,
                       "entropy_coef": 0.0},
    "w16-e4-an-ent0.0025": {**_WINDOW, "ppo_window": 16, "ppo_epochs": 4, "lr": 0.01, "advantage_norm": True,
                            "entropy_coef": 0.0025},
    "w16-e4-ent0.0025": {**_WINDOW, "ppo_window": 16, "ppo_epochs": 4, "lr": 0.01, "entropy_coef": 0.0025},
    "w16-e4-lr0.02-ent0.0025": {**_WINDOW, "ppo_window": 16, "ppo_epochs": 4, "entropy_coef": 0.0025},
    "w8-e2-ent0.005": {**_WINDOW, "ppo_window": 8, "ppo_epochs": 2, "entropy_coef": 0.005},
    "m4-w16-e4-an-ent0": {**_WINDOW, "batch_size": 4, "ppo_window": 16, "ppo_epochs": 4, "lr": 0.01,
                          "advantage_norm": True, "entropy_coef": 0.0},
}
#: the window's NB201 leader without `no_repeat` (which costs the end of a 1,000-architecture search)
GRIDS["window2"] = {
    "w16-e4-an-ent0.0025-repeats": {**GRIDS["window"]["w16-e4-an-ent0.0025"], "no_repeat": False},
}

#: `reinforce-tuned` with self-imitation: every update also pushes up the best N told architectures still above the
#: baseline, each by its advantage (the search keeps its best cell; the policy is pulled back towards it)
GRIDS["self-imitation"] = {
    "reinforce-tuned": dict(_TUNED),
    "si4": {**_TUNED, "self_imitation": 4},
    "si8": {**_TUNED, "self_imitation": 8},
    "si16": {**_TUNED, "self_imitation": 16},
    "si8-c0.5": {**_TUNED, "self_imitation": 8, "self_imitation_coef": 0.5},
    "si8-c2": {**_TUNED, "self_imitation": 8, "self_imitation_coef": 2.0},
    "si1": {**_TUNED, "self_imitation": 1},
}

#: the leaders of "self-imitation" against `reinforce-tuned` on 100 fresh tuning seeds (1170..1269)
GRIDS["confirm-self-imitation"] = {
    label: GRIDS["self-imitation"][label] for label in ("reinforce-tuned", "si8", "si8-c2", "si4")
}

#: `reinforce-tuned` (with self-imitation) with fewer updates: m architectures per update, larger steps; an update
#: per architecture is most of the controller's cost, and a policy that holds for m asks lets them share one draw
_TUNED_SI = {**_TUNED, "self_imitation": 4}
GRIDS["batch"] = {
    "reinforce-tuned": dict(_TUNED_SI),
    "m2": {**_TUNED_SI, "batch_size": 2},
    "m2-lr0.04": {**_TUNED_SI, "batch_size": 2, "lr": 0.04},
    "m4": {**_TUNED_SI, "batch_size": 4},
    "m4-lr0.04": {**_TUNED_SI, "batch_size": 4, "lr": 0.04},
    "m4-lr0.08": {**_TUNED_SI, "batch_size": 4, "lr": 0.08},
    "m4-lr0.04-si2": {**_TUNED_SI, "batch_size": 4, "lr": 0.04, "self_imitation_coef": 2.0},
    "m4-lr0.04-bd0.9": {**_TUNED_SI, "batch_size": 4, "lr": 0.04, "baseline_decay": 0.9},
}

#: the leaders of "batch" against `reinforce-tuned` on 100 fresh tuning seeds (1270..1369)
GRIDS["confirm-batch"] = {
    label: GRIDS["batch"][label] for label in ("reinforce-tuned", "m2", "m4", "m4-lr0.04-si2", "m4-lr0.04-bd0.9")
}

#: agent_kwargs of `run` by label (first) or agent name; "reinforce-paper" keeps Zoph & Le's defaults
PRESETS: dict[str, dict[str, Any]] = {"reinforce": REINFORCE_KWARGS, "evolution": REA_KWARGS, "reinforce-paper": {},
                                     "reinforce-tuned": {}}


def protocol_spec(agents: list[AgentSpec], seeds: list[int], dataset: str = "cifar10-valid") -> CompareSpec:
    """The NB201 protocol for these competitors and seeds; ``dataset``: whose 12-epoch validation is the reward
    (the simulated cost is the table's cifar10-valid training time for every dataset)."""
    return CompareSpec(
        env_id=ENV_ID, agents=agents, seeds=seeds, budget=BUDGET, env_kwargs={**ENV_KWARGS, "dataset": dataset},
        max_simulated_time_s=SIMULATED_TIME_S,
    )


def cli_command(spec: CompareSpec, out: Path, workers: int | None) -> str:
    """The equivalent ``nas compare`` command line."""
    parts = ["nas compare", f"--env {spec.env_id}", f"--env-kwargs '{json.dumps(spec.env_kwargs)}'",
             "--agents " + ",".join(a.label if a.label == a.agent else f"{a.label}:{a.agent}" for a in spec.agents)]
    parts += [f"--agent-kwargs {a.label}='{json.dumps(a.kwargs)}'" for a in spec.agents if a.kwargs]
    seeds = sorted(spec.seeds)
    parts.append(f"--seeds {len(seeds)}" if seeds == list(range(len(seeds))) else f"--seeds {seeds[0]}..{seeds[-1]}")
    parts += [f"--budget {spec.budget}", f"--simulated-time {spec.max_simulated_time_s:g}", f"--out {out}"]
    if workers:
        parts.append(f"--workers {workers}")
    return " \\\n    ".join(parts)


def published_table(report: Any, dataset: str = "cifar10-valid") -> str:
    """Our mean +- std (and 95% CI) beside the NB201 paper's, per agent."""
    lines = ["| agent | ours: test acc (%) mean ± std | ours: 95% CI | runs | NB201 paper: mean ± std |",
             "|---|---|---|---|---|"]
    for a in report.agents:
        paper = PUBLISHED.get(a["label"]) if dataset == "cifar10-valid" else None  # CIFAR-10 only; by label: "reinforce-paper" is not NB201's REINFORCE
        paper_text = f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "-"
        lines.append(f"| {a['label']} | {a['test_mean']:.2f} ± {a['test_std']:.2f} | "
                     f"[{a['test_ci_low']:.2f}, {a['test_ci_high']:.2f}] | {a['runs']} | {paper_text} |")
    optimum = report.optimum.test_pct if report.optimum else float("nan")
    published_optimum = f"{PUBLISHED_OPTIMUM:.2f}" if dataset == "cifar10-valid" else "-"
    lines.append(f"| optimum | {optimum:.2f} | | | {published_optimum} |")
    return "\n".join(lines) + "\n"


def cost_per_evaluation(traces: dict[str, list[RunTrace]], path: Path, smooth: int = 5) -> Path:
    """Mean simulated training cost of the i-th evaluated cell, per agent, with its 95% band (both smoothed
    by a moving mean over ``smooth`` evaluations): a learning agent that drifts towards large cells pays
    more per evaluation and so sees fewer cells in 12,000 s."""
    figure = plots.new_figure(1, width=6.5)
    ax = figure.subplots()
    kernel = np.ones(smooth) / smooth
    for label, runs in traces.items():
        length = max(t.num_evaluations for t in runs)
        matrix = np.full((len(runs), length), np.nan)
        for r, t in enumerate(runs):
            matrix[r, : t.num_evaluations] = [s.simulated_time_s for s in t.steps]
        mean, low, high, n = band(matrix)
        last = int(np.flatnonzero(n >= len(runs) // 2).max()) + 1  # only where at least half of the runs still go
        mean, low, high = (np.convolve(a[:last], kernel, mode="valid") for a in (mean, low, high))
        x = np.arange(1, last + 1)[smooth // 2 : smooth // 2 + mean.size]
        line, = ax.plot(x, mean, label=label)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("architectures evaluated")
    ax.set_ylabel("simulated training time of that cell (s, 12 epochs)")
    ax.set_title(f"cost of the i-th evaluation (mean over runs, 95% CI, moving mean of {smooth})", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return plots.save(figure, path)


def reinforcement(traces: dict[str, list[RunTrace]], path: Path, samples: int = 500) -> str:
    """How much reinforcement occurs, per REINFORCE label: the figure of the mean entropy of a sampled cell over
    the told evaluations (95% band) against random search's flat line, and a table of how far each run's
    controller moved (mean total variation between its start and end marginals; evaluation/policy.py)."""
    from evaluation.policy import policy_view
    from evaluation.report_html import read_scalars

    figure = plots.new_figure(1, width=6.5)
    ax = figure.subplots()
    lines = ["| agent | policy moved (mean TV, 0..1) | marginal entropy at the end (nats) | sampled-cell entropy after 10 / 50 / 90 evaluations |",
             "|---|---|---|---|"]
    uniform = None
    for label, runs in traces.items():
        series = [read_scalars(t.run_dir / "scalars.csv").get("reinforce/entropy") for t in runs]
        if not any(x is not None and len(x[0]) for x in series):
            continue
        length = max(int(x[0].max()) for x in series if x is not None and len(x[0]))
        matrix = np.full((len(runs), length), np.nan)
        for r, x in enumerate(series):  # logged at updates only (every m rewards): held until the next update
            if x is not None and len(x[0]):
                steps_r = x[0].astype(int)
                index = np.searchsorted(steps_r, np.arange(1, length + 1), side="right") - 1
                matrix[r] = np.where(index >= 0, x[1][np.maximum(index, 0)], np.nan)
                matrix[r, runs[r].num_evaluations:] = np.nan  # the run stopped
        mean, low, high, n = band(matrix)
        last = int(np.flatnonzero(n >= len(runs) // 2).max()) + 1
        steps = np.arange(1, last + 1)
        line, = ax.plot(steps, mean[:last], label=label)
        ax.fill_between(steps, low[:last], high[:last], color=line.get_color(), alpha=0.2, lw=0)
        views = [policy_view(t.run_dir, samples) for t in runs]
        moved = np.mean([v.moved for v in views if v is not None])
        end_entropy = np.mean([v.entropy("end") for v in views if v is not None])
        uniform = next(v.uniform_entropy for v in views if v is not None)
        at = [f"{np.nanmean(matrix[:, k - 1]):.2f}" if k <= length else "-" for k in (10, 50, 90)]
        lines.append(f"| {label} | {moved:.3f} | {end_entropy:.2f} | {' / '.join(at)} |")
    if uniform is not None:
        ax.axhline(uniform, color="grey", ls="--", label="random search (uniform)")
        lines.append(f"| random | 0 | {uniform:.2f} | {uniform:.2f} / {uniform:.2f} / {uniform:.2f} |")
    ax.set_xlabel("architectures evaluated")
    ax.set_ylabel("entropy of a sampled cell (nats)")
    ax.set_title("how much reinforcement occurs (mean over runs, 95% CI)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    plots.save(figure, path)
    return "\n".join(lines) + "\n"


def analysis(report: Any, traces: dict[str, list[RunTrace]]) -> str:
    """Why the learning agents differ: evaluations, repeats and cost per cell, REINFORCE vs REA head to head."""
    runs = {label: [r for r in report.runs if r["label"] == label] for label in traces}
    lines = ["| agent | evaluations | distinct cells | repeats | simulated s per evaluation | best reward after 50 / 90 evaluations |",
             "|---|---|---|---|---|---|"]
    for label, ts in traces.items():
        evals = np.mean([t.num_evaluations for t in ts])
        distinct = np.mean([len({s.arch_key for s in t.steps}) for t in ts])
        cost = np.mean([t.cumulative_time_s()[-1] / t.num_evaluations for t in ts])
        at = [np.mean([t.best_so_far()[min(k, t.num_evaluations) - 1] for t in ts]) for k in (50, 90)]
        lines.append(f"| {label} | {evals:.1f} | {distinct:.1f} | {100 * (1 - distinct / evals):.1f}% | {cost:.1f} | "
                     f"{at[0]:.4f} / {at[1]:.4f} |")
    mine = next((label for label in ("reinforce-tuned", "reinforce") if label in runs), None)
    for other in ("evolution", "random"):
        if mine is None or other not in runs:
            continue
        lines.append("")
        for key, unit, d in (("test_acc", "test accuracy (%)", 2), ("best_reward", "best validation reward", 4)):
            w = welch_difference([r[key] for r in runs[mine]], [r[key] for r in runs[other]])
            lines.append(f"{mine} - {other}, {unit}: {w.diff:+.{d}f}, 95% CI [{w.ci_low:+.{d}f}, {w.ci_high:+.{d}f}], "
                         f"{p_text(w.p_value)} (Welch)")
    return "\n".join(lines) + "\n"


def cmd_run(args: argparse.Namespace) -> int:
    agents = []
    for item in args.agents.split(","):
        label, _, name = item.strip().rpartition(":")
        label = label or name
        agents.append(AgentSpec(label, name, dict(PRESETS.get(label, PRESETS.get(name, {})))))
    spec = protocol_spec(agents, args.seeds, args.dataset)
    print(cli_command(spec, args.out, args.workers), flush=True)
    start = time.perf_counter()
    report = run_compare(args.out, spec, args.workers, log=None if args.quiet else print)
    wall = time.perf_counter() - start
    table = published_table(report, args.dataset)
    traces = load_compare_traces(args.out, spec)
    notes = analysis(report, traces)
    cost_per_evaluation(traces, args.out / "cost_per_evaluation.png")
    notes += "\n" + reinforcement(traces, args.out / "reinforcement.png")
    (args.out / "published.md").write_text(table + "\n" + notes)
    print((args.out / "summary.md").read_text())
    print(table)
    print(notes)
    print(f"wall time {wall:.1f} s")
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for name in ("curves_evaluations.png", "curves_simulated_time.png", "final_test.png", "cost_per_evaluation.png",
                     "reinforcement.png"):
            shutil.copyfile(args.out / name, args.figures / f"{args.figure_prefix}{name}")
        print(f"figures copied to {args.figures}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    grid = GRIDS[args.grid]
    agents = [AgentSpec(f"rl-{name}", "reinforce", kwargs) for name, kwargs in grid.items()]
    if args.with_baselines:
        agents += [AgentSpec("random", "random", {}), AgentSpec("rea", "evolution", dict(REA_KWARGS))]
    spec = protocol_spec(agents, args.seeds, args.dataset)
    start = time.perf_counter()
    report = run_compare(args.out, spec, args.workers, log=None if args.quiet else print)
    ranked = sorted(report.agents, key=lambda a: -a["best_reward_mean"])
    print(f"\nranked by mean final best VALIDATION reward over {len(args.seeds)} tuning seeds "
          f"({time.perf_counter() - start:.0f} s):")
    print("| rank | label | agent_kwargs | best val. reward mean ± std | 95% CI | evals |")
    print("|---|---|---|---|---|---|")
    for rank, a in enumerate(ranked, 1):
        print(f"| {rank} | {a['label']} | `{a['agent_kwargs']}` | {a['best_reward_mean']:.5f} ± {a['best_reward_std']:.5f} | "
              f"[{a['best_reward_ci_low']:.5f}, {a['best_reward_ci_high']:.5f}] | {a['evaluations_mean']:.1f} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the comparison on seeds 0..N-1 with the published numbers beside it")
    run.add_argument("--agents", default="reinforce-tuned,evolution,random,reinforce-paper:reinforce",
                     help="AGENT or LABEL:AGENT items; settings from PRESETS (default: %(default)s)")
    run.add_argument("--seeds", type=parse_seeds, default=list(range(100)))
    run.add_argument("--dataset", default="cifar10-valid", help="cifar10-valid, cifar100 or ImageNet16-120")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--figures", type=Path, default=None, help="copy the PNGs here (as PREFIX*.png)")
    run.add_argument("--figure-prefix", default="nb201_", help="file name prefix of the copied PNGs (%(default)s)")
    run.add_argument("--workers", type=int, default=None)
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(func=cmd_run)
    tune = sub.add_parser("tune", help="REINFORCE settings ranked by validation reward on tuning seeds")
    tune.add_argument("--grid", choices=sorted(GRIDS), default="lr-batch")
    tune.add_argument("--seeds", type=parse_seeds, default=list(range(1000, 1020)))
    tune.add_argument("--dataset", default="cifar10-valid", help="cifar10-valid, cifar100 or ImageNet16-120")
    tune.add_argument("--out", type=Path, required=True)
    tune.add_argument("--with-baselines", action="store_true", help="also run random search and REA on these seeds")
    tune.add_argument("--workers", type=int, default=None)
    tune.add_argument("--quiet", action="store_true")
    tune.set_defaults(func=cmd_tune)
    return parser


if __name__ == "__main__":
    arguments = build_parser().parse_args()
    sys.exit(arguments.func(arguments))
