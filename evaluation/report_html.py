"""The HTML pages of ``nas report`` (``RUN_DIR/report/index.html``) and ``nas compare`` (``OUT/index.html``).

One self-contained file each (see :mod:`evaluation.html`): figures inline as PNG ``data:`` URIs, every
architecture drawn as inline SVG by its space's drawing (:mod:`nas_env.spaces.drawing`), no script. A page of a
search still running reloads itself (``<meta http-equiv="refresh">``).
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evaluation import plots
from evaluation.html import esc, figure_html, kv_table, num, page, table
from evaluation.pareto import pareto_front
from evaluation.stats import p_text
from evaluation.traces import RunTrace, Step

PAGE = "index.html"


# ---------------------------------------------------------------------------------------------- pieces
def architecture_of(step: Step) -> Any:
    """The :class:`~nas_env.spaces.base.Architecture` of a step (None when its space is unknown)."""
    if step.space_config is None:
        return None
    try:
        from nas_env.spaces import space_from_config

        return space_from_config(step.space_config).architecture_from_json(step.arch_json)
    except Exception:  # noqa: BLE001 - an unknown space still gets a readable report
        return None


def drawing_cell(arch: Any, text: str) -> str:
    """A table cell with the architecture drawn and its text form under it."""
    svg = ""
    if arch is not None:
        try:
            from nas_env.spaces.drawing import architecture_svg

            svg = architecture_svg(arch)
        except Exception as exc:  # noqa: BLE001 - a drawing bug must not lose the report
            svg = f'<p class="state">(no drawing: {esc(exc)})</p>'
    return f'<td class="drawing">{svg}<code>{esc(text)}</code></td>'


def read_scalars(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``scalars.csv`` as name -> (steps, values, unix times), in file order."""
    out: dict[str, tuple[list[float], list[float], list[float]]] = {}
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step, value, when = float(row["step"]), float(row["value"]), float(row["time"])
            except (KeyError, TypeError, ValueError):
                continue  # a line being written right now
            lists = out.setdefault(row["name"], ([], [], []))
            lists[0].append(step)
            lists[1].append(value)
            lists[2].append(when)
    return {k: (np.array(a), np.array(b), np.array(c)) for k, (a, b, c) in out.items()}


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def _core_elapsed(run_dir: Path) -> float | None:
    """Search time over every driver, as the search core last saved it."""
    try:
        from agents.core import CORE_STATE
        from nas_env.store import ResultStore

        with ResultStore(run_dir / "store.sqlite") as store:
            blob = store.load_state(CORE_STATE)
        return None if blob is None else float(json.loads(blob.decode()).get("elapsed_s", 0.0))
    except Exception:  # noqa: BLE001 - times are informative only
        return None


# ---------------------------------------------------------------------------------------------- one run
def run_page(trace: RunTrace, top: list[dict[str, Any]], files: dict[str, Path], summary: dict[str, Any],
             live: bool, refresh_s: int) -> str:
    """The page of one search. ``files``: the figures already written (by name); ``top``: the top-k rows."""
    cfg = trace.config
    scalars = read_scalars(trace.run_dir / "scalars.csv")
    times = [t for _, _, ts in scalars.values() for t in ts]
    started, last = (min(times), max(times)) if times else (None, None)
    statuses = ", ".join(f"{esc(k)}: {v}" for k, v in sorted(summary["statuses"].items()))
    execu = cfg.executor or {}
    rows: list[tuple[str, Any]] = [
        ("environment", f"<code>{esc(cfg.env_id)}</code> <code>{esc(json.dumps(cfg.env_kwargs, sort_keys=True))}</code>"),
        ("agent", f"<code>{esc(cfg.agent)}</code> <code>{esc(json.dumps(cfg.agent_kwargs, sort_keys=True))}</code>, seed {cfg.seed}"),
        ("budget", f"{summary['evaluations']} / {cfg.budget} evaluations told"
         + (f", wall-time limit {_seconds(cfg.max_wall_time_s)}" if cfg.max_wall_time_s else "")),
        ("executor", f"{esc(execu.get('executor', '-'))}, {esc(execu.get('max_in_flight', '-'))} in flight"),
        ("statuses", statuses),
        ("distinct architectures", summary["distinct_architectures"]),
        ("best reward", f"{summary['best_reward']:.6g} (told #{summary['best_seq']})"),
        ("started / last result", f"{_when(started)} / {_when(last)}"),
        ("search time (all drivers)", _seconds(_core_elapsed(trace.run_dir))),
        ("training time of the children", _seconds(sum(s.result.wall_time_s for s in trace.steps if s.result is not None))),
    ]
    if summary.get("simulated_time_s"):
        rows.append(("simulated training time", _seconds(summary["simulated_time_s"])))
    if summary.get("best_test_acc") is not None:
        rows.append(("test accuracy of the pick", f"{summary['best_test_acc']:.2f}%"))
    state = (f'<span class="live">running</span>: this page reloads every {refresh_s} s' if live
             else "finished or stopped: this page no longer changes by itself")
    body = [f'<section id="summary"><h2>Run</h2>{kv_table(rows, "run-summary")}</section>']
    body.append('<section id="best-so-far"><h2>Best so far</h2>' + figure_html(
        files["best_so_far.png"], "best reward so far against evaluations",
        "The best reward after each told evaluation (steps), every reward (dots), failures (red x)"
        + (", and the test accuracy of the architecture picked by validation (dashed)." if trace.has_test else ".")) + "</section>")
    body.append('<section id="rewards"><h2>Every reward over time</h2>' + figure_html(
        files["rewards.png"], "every reward in told order",
        "Left: each reward in the order the agent was told, with a rolling mean. Right: the rewards of each "
        "window of evaluations.") + "</section>")
    body.append('<section id="agent-scalars"><h2>The agent\'s own scalars</h2>')
    if "agent_scalars.png" in files:
        body.append(figure_html(files["agent_scalars.png"], "the agent's scalars",
                                "What the agent logs in scalars.csv, against the told evaluations"
                                + (" (REINFORCE: its moving-average baseline, the entropy of its policy, loss ...)."
                                   if cfg.agent.startswith("reinforce") else ".")))
    else:
        body.append(f"<p>{esc(cfg.agent)} logs no scalars of its own (yet).</p>")
    body.append("</section>")
    if "policy.png" in files:
        moved = summary.get("policy", {})
        body.append('<section id="policy"><h2>What the controller learned</h2>' + figure_html(
            files["policy.png"], "the controller's choice probabilities at the start and at the end",
            "P(choice) at each decision when the run started and when it ended (the controller's marginals over "
            "2,000 architectures it draws), and its entropy and baseline over time; the dashed lines are random "
            f"search's. The policy moved {moved.get('policy_moved_tv', float('nan')):.2f} in mean total variation "
            "(0: not at all, 1: every decision switched).") + "</section>")
    body.append('<section id="pareto"><h2>Accuracy against parameters</h2>')
    if "pareto.png" in files:
        body.append(figure_html(files["pareto.png"], "score against parameters with the Pareto front",
                                "Every distinct architecture that trained, and (red) those no other beats on both "
                                "fewer parameters and a better score."))
    else:
        body.append("<p>No result carries a parameter count.</p>")
    body.append("</section>")
    has_test = any(r["test_acc"] is not None for r in top)
    header = ["rank", "told #", "reward", "metric", "status", "params"] + (["test acc (%)"] if has_test else []) + ["architecture"]
    trs = []
    for r in top:
        cells = [num(r["rank"]), num(r["seq"]), num(r["reward"], 6), num(r["metric"], 4), esc(r["status"]), num(r["params"])]
        if has_test:
            cells.append(num(r["test_acc"], 4))
        cells.append(drawing_cell(r.get("arch"), r["architecture"]))
        trs.append(({"key": r["arch_key"], "reward": repr(float(r["reward"])), "rank": r["rank"]}, cells))
    body.append(f'<section id="top-k"><h2>Top {len(top)} architectures</h2>'
                "<p>Distinct architectures by reward (ties: the first told), each drawn by its search space.</p>"
                + table(header, trs, "top-k-table") + "</section>")
    title = f"Search report: {cfg.env_id}, {cfg.agent}, seed {cfg.seed}"
    subtitle = f"{esc(trace.run_dir.name)}: {state}; written {_when(time.time())}"
    return page(title, "\n".join(body), refresh_s if live else None, subtitle)


def run_figures(trace: RunTrace, out: Path, title: str) -> dict[str, Path]:
    """The extra figures of the page: the agent's scalars and the Pareto scatter (when there is data)."""
    files: dict[str, Path] = {}
    scalars = read_scalars(trace.run_dir / "scalars.csv")
    first = ("baseline", "entropy")  # REINFORCE's: shown first
    names = sorted(scalars, key=lambda n: (not n.endswith(first), n))
    own = {n: scalars[n][:2] for n in names if not n.startswith("search/") and len(scalars[n][0])}
    if own:
        files["agent_scalars.png"] = plots.plot_scalars(dict(list(own.items())[:12]), out / "agent_scalars.png", title)
    seen: dict[str, Step] = {}
    for step in trace.steps:
        if step.status == "ok" and step.result is not None and step.result.params is not None:
            seen.setdefault(step.arch_key, step)
    if seen:
        steps = list(seen.values())
        perplexity = any(s.result.extra.get("metric_name") == "val_perplexity" for s in steps)  # type: ignore[union-attr]
        use_metric = not perplexity and all(s.result.metric is not None for s in steps)  # type: ignore[union-attr]
        cost = np.array([float(s.result.params) for s in steps])  # type: ignore[union-attr, arg-type]
        score = np.array([float(s.result.metric if use_metric else s.reward) for s in steps])  # type: ignore[union-attr]
        front = pareto_front(list(zip(cost.tolist(), score.tolist())))
        files["pareto.png"] = plots.plot_pareto(cost, score, front, out / "pareto.png", "parameters",
                                                "validation accuracy" if use_metric else "reward", title)
    return files


# ---------------------------------------------------------------------------------------------- comparison
def compare_page(spec: Any, agents: list[dict[str, Any]], runs: list[dict[str, Any]], optimum: Any,
                 figures: Sequence[Path], picks: dict[str, Any], timings: dict[str, Any] | None) -> str:
    """The page of a comparison: its table, the curves with bands, the final distributions, every run's pick
    drawn. ``picks``: run name -> Architecture of its pick (or None)."""
    pct = int(round(spec.confidence * 100))
    has_test = all("test_mean" in a for a in agents)
    rows = [
        ("environment", f"<code>{esc(spec.env_id)}</code> <code>{esc(json.dumps(spec.env_kwargs, sort_keys=True))}</code>"),
        ("budget", f"{spec.budget} evaluations per run"
         + (f", simulated-time budget {spec.max_simulated_time_s:g} s" if spec.max_simulated_time_s else "")),
        ("seeds", f"{len(spec.seeds)} per agent: {esc(', '.join(map(str, spec.seeds)))}"),
        ("executor", f"<code>{esc(json.dumps(spec.executor, sort_keys=True))}</code>"),
        ("reference", esc(spec.reference_label or "-")),
    ]
    if optimum is not None:
        rows.append(("optimum", f"test {optimum.test_pct:.4f}% ({esc(optimum.source)})"))
    if timings:
        for session in timings.get("sessions", []):
            rows.append(("session", f"{esc(session.get('started', '-'))}: {len(session['runs'])} runs in "
                                    f"{session['total_wall_s']:.1f} s wall, {session['workers']} worker(s)"))
    header = ["agent", "runs", "evals (mean)", "best reward (mean ± std)"]
    header += ["test acc (%)", f"{pct}% CI"] if has_test else [f"{pct}% CI"]
    header += ["regret", "optimum found"] if has_test and optimum is not None else []
    header += ["vs " + spec.reference_label] if spec.reference_label else []
    trs = []
    for a in agents:
        cells = [esc(a["label"] + (f" ({a['agent']})" if a["label"] != a["agent"] else "")), num(a["runs"]),
                 num(a["evaluations_mean"], 4), esc(f"{a['best_reward_mean']:.4g} ± {a['best_reward_std']:.2g}")]
        if has_test:
            cells += [esc(f"{a['test_mean']:.2f} ± {a['test_std']:.2f}"), esc(f"[{a['test_ci_low']:.2f}, {a['test_ci_high']:.2f}]")]
            if optimum is not None:
                cells += [num(a.get("regret_mean"), 4), esc(f"{100 * a['found_optimum']:.0f}%")]
        else:
            cells.append(esc(f"[{a['best_reward_ci_low']:.4g}, {a['best_reward_ci_high']:.4g}]"))
        if spec.reference_label:
            if a["label"] == spec.reference_label:
                cells.append("(reference)")
            elif "diff_vs_ref" in a:
                cells.append(esc(f"{a['diff_vs_ref']:+.3g} [{a['diff_ci_low']:+.3g}, {a['diff_ci_high']:+.3g}], {p_text(a['diff_p'])}"))
            else:
                cells.append("-")
        trs.append(({"label": a["label"], "best-reward-mean": repr(float(a["best_reward_mean"]))}, cells))
    what = ("test accuracy of the architecture each run picks by validation" if has_test
            else "best reward of each run")
    body = [f'<section id="summary"><h2>Comparison</h2>{kv_table(rows, "compare-summary")}</section>',
            f'<section id="agents"><h2>Agents</h2><p>Per agent, the {esc(what)}: mean ± std over runs and the {pct}% '
            "t-interval of the mean.</p>" + table(header, trs, "agents-table") + "</section>"]
    captions = {
        "curves_evaluations.png": "Best so far against the number of evaluations: mean over runs, shaded: the "
                                  f"{pct}% confidence band of the mean.",
        "curves_simulated_time.png": "Best so far against simulated training time (mean and band).",
        "final_test.png": "The final distribution over runs: test accuracy of each run's validation pick.",
    }
    body.append('<section id="curves"><h2>Curves and final distributions</h2>')
    for path in figures:
        body.append(figure_html(path, path.stem.replace("_", " "), captions.get(path.name, "")))
    body.append("</section>")
    run_header = ["run", "evaluations", "best reward"] + (["test acc (%)"] if has_test else []) + ["pick"]
    run_rows = []
    for r in runs:
        cells = [esc(r["run"]), num(r["evaluations"]), num(r["best_reward"], 6)]
        if has_test:
            cells.append(num(r["test_acc"], 4))
        cells.append(drawing_cell(picks.get(r["run"]), r["pick_arch"]))
        run_rows.append(({"run": r["run"], "best-reward": repr(float(r["best_reward"]))}, cells))
    body.append('<section id="runs"><h2>Every run and its pick</h2>' + table(run_header, run_rows, "runs-table") + "</section>")
    return page(f"Comparison on {spec.env_id}", "\n".join(body), None, f"written {_when(time.time())}")
