"""Reports built from run directories only: a comparison's table and curves, and one search's report.

Comparison (``write_compare_report(OUT)``), from ``OUT/compare.json`` and ``OUT/runs/*``:

* ``summary.md`` / ``summary.csv`` / ``summary.json``: per agent, the final TEST accuracy (in %) of the
  architecture each run picks by VALIDATION (its best reward; ties: first found), with mean, std (ddof=1),
  the 95% t confidence interval of the mean, the regret to the table's test optimum, how often the optimum
  was picked, and the difference to a reference agent (Welch; random search by default);
* ``runs.csv``: one row per run (its pick and the numbers above), so every mean can be recomputed;
* ``curves.csv`` and ``curves_evaluations.png`` / ``curves_simulated_time.png``: best-so-far validation
  reward and test accuracy of the validation pick, mean with 95% band, against the number of evaluations
  and against simulated training time; ``final_test.png``: the distribution of the final test accuracy;
* on NAS-Bench-201, ``time_to_threshold.csv`` / ``time_to_threshold.png`` (and a table in ``summary.md``):
  per agent, the evaluations and simulated time until the first cell in the table's top 1%, top 0.1% and
  optimum by validation, with the fraction of runs that got there (:mod:`evaluation.thresholds`).

``rank="pareto"`` orders the agents by Pareto rank on (mean parameters of the pick, mean test accuracy of
the pick, or best reward without test accuracies): rank 1 is the front no other agent beats on both, rank 2
the front of the rest, and so on (:func:`evaluation.pareto.pareto_ranks`); the table shows both columns.

Tables hold no wall-clock times (those are in ``timings.json``), so the same seeds give identical tables.

One search (``write_run_report(RUN_DIR)``), into ``RUN_DIR/report/``: ``best_so_far.png``,
``rewards.png`` (scatter + rolling mean, boxplots per window of evaluations), ``top_k.md`` / ``top_k.csv``,
``summary.json``, ``agent_scalars.png`` and ``pareto.png`` when there is data, and ``index.html``: one
self-contained page with all of them and the top-k architectures drawn (:mod:`evaluation.report_html`).
A comparison also gets ``OUT/index.html``. Every file is replaced atomically, so a search can refresh its
report while someone reads it (:mod:`evaluation.live`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from evaluation import plots
from evaluation.compare_spec import CompareSpec, read_spec, read_timings, run_name, runs_dir
from evaluation import thresholds as ttt
from evaluation.curves import Curve, group_curves
from evaluation.html import write_atomic
from evaluation.pareto import pareto_ranks
from evaluation.stats import MeanCI, mean_ci, p_text, welch_difference
from evaluation.traces import RunTrace, Step, load_trace

PCT = 100.0  # test accuracies are stored in [0, 1]; tables show % like the published figures
RANKS = ("given", "pareto")  # the order of the agents in a comparison's table


# ---------------------------------------------------------------------------------------------- optimum
@dataclasses.dataclass(frozen=True)
class Optimum:
    """The best test accuracy (%) and best reward the environment can give, when it is a lookup table."""

    test_pct: float
    test_indices: tuple[int, ...]
    reward: float | None
    source: str


def table_optimum(env_id: str, env_kwargs: dict[str, Any]) -> Optimum | None:
    """The NAS-Bench-201 optima of the evaluator behind ``env_id`` (None for other environments): the
    200-epoch test optimum of its dataset and the best reward at its fidelity."""
    from agents.search import make_env_parts
    from nas_env.cost import base_evaluator
    from nas_env.evaluators import reward_from_metric
    from nas_env.tabular import TabularEvaluator

    _, evaluator, _ = make_env_parts(env_id, env_kwargs)
    evaluator = base_evaluator(evaluator)  # a cost-aware reward has the same table behind it
    if not isinstance(evaluator, TabularEvaluator):
        return None
    table = evaluator.table()
    test = table.optimum(evaluator.dataset, "test", 200)
    reward = None
    if evaluator.noise == 0.0:
        valid = table.optimum(evaluator.dataset, "valid", evaluator.fidelity)
        reward = float(reward_from_metric(valid.fraction, evaluator.reward_shaping))
    return Optimum(float(test.value), test.indices, reward, f"NB201 table column {test.column}")


# ---------------------------------------------------------------------------------------------- per run
def architecture_string(step: Step) -> str:
    """The architecture of a step as its space prints it (NB201: the official string), else its JSON."""
    if step.space_config is not None:
        try:
            from nas_env.spaces import space_from_config

            return str(space_from_config(step.space_config).architecture_from_json(step.arch_json))
        except Exception:  # noqa: BLE001 - an unknown space still gets a readable report
            pass
    return step.arch_json


def run_row(label: str, agent: str, seed: int, trace: RunTrace, optimum: Optimum | None) -> dict[str, Any]:
    """The numbers of one run: its pick (best reward, first found) and that pick's test accuracy."""
    pick = trace.pick
    row: dict[str, Any] = {
        "label": label,
        "agent": agent,
        "seed": seed,
        "run": run_name(label, seed),
        "evaluations": trace.num_evaluations,
        "simulated_time_s": float(trace.cumulative_time_s()[-1]),
        "best_reward": pick.reward,
        "pick_seq": pick.seq,
        "pick_arch": architecture_string(pick),
        "pick_nb201_index": None if pick.result is None else pick.result.extra.get("nb201_index"),
        "test_acc": None if pick.test_accuracy is None else pick.test_accuracy * PCT,
        "pick_params": None if pick.result is None else pick.result.params,
    }
    if optimum is not None and row["test_acc"] is not None:
        row["regret"] = optimum.test_pct - row["test_acc"]
        row["found_optimum"] = row["pick_nb201_index"] in optimum.test_indices
    return row


# ---------------------------------------------------------------------------------------------- per agent
def agent_row(
    label: str, agent: str, kwargs: dict[str, Any], rows: Sequence[dict[str, Any]], optimum: Optimum | None,
    reference: Sequence[dict[str, Any]] | None, confidence: float,
) -> dict[str, Any]:
    """Mean, std and CI of the runs of one agent; Welch difference to the reference agent's runs."""
    reward = mean_ci([r["best_reward"] for r in rows], confidence)
    out: dict[str, Any] = {
        "label": label,
        "agent": agent,
        "agent_kwargs": json.dumps(kwargs, sort_keys=True),
        "runs": len(rows),
        "evaluations_mean": float(np.mean([r["evaluations"] for r in rows])),
        "simulated_time_s_mean": float(np.mean([r["simulated_time_s"] for r in rows])),
        **_prefixed("best_reward", reward),
    }
    if all(r.get("pick_params") is not None for r in rows):
        out["pick_params_mean"] = float(np.mean([r["pick_params"] for r in rows]))
    tests = [r["test_acc"] for r in rows]
    has_test = all(t is not None for t in tests)
    if has_test:
        test = mean_ci(tests, confidence)
        out.update(_prefixed("test", test))
        if optimum is not None:
            out.update(
                regret_mean=optimum.test_pct - test.mean,
                regret_ci_low=optimum.test_pct - test.ci_high,
                regret_ci_high=optimum.test_pct - test.ci_low,
                found_optimum=float(np.mean([bool(r["found_optimum"]) for r in rows])),
            )
    if reference is not None and reference is not rows and len(rows) > 1 and len(reference) > 1:
        key = "test_acc" if has_test and all(r["test_acc"] is not None for r in reference) else "best_reward"
        diff = welch_difference([r[key] for r in rows], [r[key] for r in reference], confidence)
        out.update(diff_of=key, diff_vs_ref=diff.diff, diff_ci_low=diff.ci_low, diff_ci_high=diff.ci_high, diff_p=diff.p_value)
    return out


def _prefixed(prefix: str, s: MeanCI) -> dict[str, float]:
    return {f"{prefix}_mean": s.mean, f"{prefix}_std": s.std, f"{prefix}_ci_low": s.ci_low, f"{prefix}_ci_high": s.ci_high}


# ---------------------------------------------------------------------------------------------- comparison
@dataclasses.dataclass
class CompareReport:
    """The comparison's numbers and where its files are."""

    out_dir: Path
    spec: CompareSpec
    agents: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    optimum: Optimum | None
    files: list[Path]
    time_to_threshold: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def agent(self, label: str) -> dict[str, Any]:
        return next(a for a in self.agents if a["label"] == label)


def load_compare_traces(out_dir: Path, spec: CompareSpec) -> dict[str, list[RunTrace]]:
    """label -> the traces of its runs, in seed order."""
    return {
        a.label: [load_trace(runs_dir(out_dir) / run_name(a.label, seed)) for seed in spec.seeds] for a in spec.agents
    }


def write_compare_report(out_dir: str | Path, rank: str = "given") -> CompareReport:
    """Recompute the comparison in ``out_dir`` from its run directories and write every report file;
    ``rank``: the order of the agents, as given or by Pareto rank (see the module docstring)."""
    if rank not in RANKS:
        raise ValueError(f"rank must be one of {RANKS}, got {rank!r}")
    out = Path(out_dir)
    spec = read_spec(out)
    traces = load_compare_traces(out, spec)
    optimum = table_optimum(spec.env_id, spec.env_kwargs)
    runs = [
        run_row(a.label, a.agent, seed, trace, optimum)
        for a in spec.agents
        for seed, trace in zip(spec.seeds, traces[a.label])
    ]
    by_label = {a.label: [r for r in runs if r["label"] == a.label] for a in spec.agents}
    ref = spec.reference_label
    agents = [
        agent_row(a.label, a.agent, a.kwargs, by_label[a.label], optimum, by_label.get(ref) if ref else None, spec.confidence)
        for a in spec.agents
    ]
    if rank == "pareto":
        agents = rank_by_pareto(agents)
    table = ttt.table_thresholds(spec.env_id, spec.env_kwargs)
    reach_rows: list[dict[str, Any]] = []
    reach_files: list[Path] = []
    if table is not None:
        reaches = {a.label: [ttt.run_reaches(t, table) for t in traces[a.label]] for a in spec.agents}
        for row in runs:
            hit = reaches[row["label"]][spec.seeds.index(row["seed"])]
            for name, got in hit.items():
                row[f"evals_to_{_slug(name)}"] = None if got is None else got[0]
                row[f"simulated_s_to_{_slug(name)}"] = None if got is None else got[1]
        reach_rows = [r for a in agents for r in ttt.agent_rows(a["label"], reaches[a["label"]], table)]
        reach_files = [_write_csv(out / "time_to_threshold.csv", reach_rows),
                       _reach_figure(out / "time_to_threshold.png", traces, reaches, table)]
    curves = group_curves(traces, ["best_reward", "picked_test"], spec.max_simulated_time_s, spec.confidence)
    files = [
        _write_json(out / "summary.json", _summary_json(spec, agents, optimum, reach_rows, rank)),
        _write_csv(out / "summary.csv", agents),
        _write_csv(out / "runs.csv", runs),
        _write_curves_csv(out / "curves.csv", curves),
        *_compare_figures(out, curves, by_label, optimum),
        *reach_files,
    ]
    markdown = compare_markdown(spec, agents, optimum, _timings(out), [f.name for f in files], reach_rows, rank)
    files.insert(0, _write_text(out / "summary.md", markdown))
    files.append(_write_text(out / "index.html", _compare_html(out, spec, agents, runs, optimum, traces, files)))
    return CompareReport(out, spec, agents, runs, optimum, files, reach_rows)


def _compare_html(out: Path, spec: CompareSpec, agents: list[dict[str, Any]], runs: list[dict[str, Any]],
                  optimum: Optimum | None, traces: dict[str, list[RunTrace]], files: list[Path]) -> str:
    from evaluation.report_html import architecture_of, compare_page

    picks = {run_name(a.label, seed): architecture_of(trace.pick)
             for a in spec.agents for seed, trace in zip(spec.seeds, traces[a.label])}  # fmt: skip
    figures = [f for f in files if f.suffix == ".png"]
    return compare_page(spec, agents, runs, optimum, figures, picks, _timings(out))


def _slug(name: str) -> str:
    """``"top 0.1%"`` -> ``"top_0.1pct"``: a column-name form of a threshold's name."""
    return name.replace("%", "pct").replace(" ", "_")


def rank_by_pareto(agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent rows with ``pareto_rank`` (on mean pick parameters vs mean test accuracy, or best reward
    without test accuracies), sorted by it (ties: higher score first, then as given)."""
    if not agents or not all("pick_params_mean" in a for a in agents):
        raise ValueError("Pareto ranking needs the parameter count of every pick; these results have none")
    key = "test_mean" if all("test_mean" in a for a in agents) else "best_reward_mean"
    ranks = pareto_ranks([(a["pick_params_mean"], a[key]) for a in agents])
    rows = [{**a, "pareto_rank": r, "pareto_score": key} for a, r in zip(agents, ranks)]
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["pareto_rank"], -rows[i][key], i))
    return [rows[i] for i in order]


def _reach_figure(path: Path, traces: dict[str, list[RunTrace]], reaches: dict[str, list[dict[str, Any]]],
                  table: "ttt.TableThresholds") -> Path:
    all_traces = [t for ts in traces.values() for t in ts if t.steps]
    longest = max((t.num_evaluations for t in all_traces), default=1)
    grids = {"evaluations": (0, np.arange(0, longest + 1, dtype=float))}
    if all_traces and all(t.cumulative_time_s()[-1] > 0 for t in all_traces):
        end = max(float(t.cumulative_time_s()[-1]) for t in all_traces)
        grids["simulated_time_s"] = (1, np.linspace(0.0, end, 401))
    panels: dict[tuple[str, str], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for axis, (col, grid) in grids.items():
        for level in table.levels:
            panels[(axis, level.name)] = {
                label: (grid, ttt.reach_curves(hits, level.name, col, grid)) for label, hits in reaches.items()
            }
    return plots.plot_reach(panels, path, f"time to the table's top 1% / top 0.1% / optimum ({table.column})")


def _summary_json(spec: CompareSpec, agents: list[dict[str, Any]], optimum: Optimum | None,
                  reach_rows: Sequence[dict[str, Any]] = (), rank: str = "given") -> dict[str, Any]:
    return {
        "spec": spec.to_dict(),
        "reference": spec.reference_label,
        "optimum": None if optimum is None else dataclasses.asdict(optimum),
        "rank": rank,
        "agents": agents,
        "time_to_threshold": list(reach_rows),
        "units": {"test": "% (CIFAR-10 test accuracy of the validation pick)", "best_reward": "reward",
                  "time_to_threshold": "evaluations (1-based, the one that got there counts) and simulated s"},
    }


def _compare_figures(out: Path, curves: list[Curve], by_label: dict[str, list[dict[str, Any]]], optimum: Optimum | None) -> list[Path]:
    has_test = all(r["test_acc"] is not None for rows in by_label.values() for r in rows)
    shown = [c for c in curves if has_test or c.quantity != "picked_test"]
    ref = {} if optimum is None else {"picked_test": optimum.test_pct, **({"best_reward": optimum.reward} if optimum.reward is not None else {})}
    files = [plots.plot_curves(shown, "evaluations", out / "curves_evaluations.png", "best so far vs evaluations", optimum=ref)]
    if any(c.axis == "simulated_time_s" for c in shown):
        files.append(plots.plot_curves(shown, "simulated_time_s", out / "curves_simulated_time.png", "best so far vs simulated time", optimum=ref))
    if has_test:
        values = {label: [r["test_acc"] for r in rows] for label, rows in by_label.items()}
        files.append(plots.plot_final_boxplot(values, out / "final_test.png", "test accuracy (%) of the validation pick",
                                              None if optimum is None else optimum.test_pct))
    return files


def _timings(out: Path) -> dict[str, Any] | None:
    sessions = read_timings(out)
    return {"sessions": sessions} if sessions else None


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def compare_markdown(
    spec: CompareSpec,
    agents: list[dict[str, Any]],
    optimum: Optimum | None,
    timings: dict[str, Any] | None = None,
    files: Sequence[str] = (),
    reach_rows: Sequence[dict[str, Any]] = (),
    rank: str = "given",
) -> str:
    """The comparison table as markdown (the same numbers as summary.csv, rounded)."""
    pct = int(round(spec.confidence * 100))
    has_test = all("test_mean" in a for a in agents)
    what = (
        "Test accuracy (%) of the architecture each run picks by validation (its best reward, ties: first found)"
        if has_test else "Best reward of each run (no test accuracy in these results)"
    )
    lines = [
        f"# Comparison on {spec.env_id}",
        "",
        f"env_kwargs `{json.dumps(spec.env_kwargs, sort_keys=True)}`, budget {spec.budget} evaluations"
        + (f", simulated-time budget {spec.max_simulated_time_s:g} s" if spec.max_simulated_time_s else "")
        + f", seeds {_seed_range(spec.seeds)} ({len(spec.seeds)} per agent).",
        "",
        f"{what}: mean ± std over runs and the {pct}% t-interval of the mean"
        + (f"; regret = optimum {optimum.test_pct:.4f} - test" if optimum and has_test else "")
        + (f"; last column: difference of the means to `{spec.reference_label}` with its {pct}% Welch interval and p-value"
           if spec.reference_label else "") + ".",
        "",
    ]
    header = ["agent", "runs", "evals", "best reward"]
    header += ["test acc", f"{pct}% CI"] if has_test else [f"{pct}% CI"]
    header += ["regret", "optimum found"] if has_test and optimum else []
    header += ["vs " + spec.reference_label] if spec.reference_label else []
    pareto = rank == "pareto"
    header += ["params of the pick", "Pareto rank"] if pareto else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a in agents:
        cells = _agent_cells(a, spec, has_test, optimum is not None)
        cells += [f"{a['pick_params_mean']:,.0f}", str(a["pareto_rank"])] if pareto else []
        lines.append("| " + " | ".join(cells) + " |")
    if pareto:
        lines += ["", "Rows in Pareto order on (mean parameters of the pick, lower is better; mean "
                  + ("test accuracy" if has_test else "best reward") + " of the pick, higher is better): rank 1 is the front."]
    if reach_rows:
        lines += ["", "## Time to threshold", "",
                  "Evaluations (and simulated training seconds) until a run first evaluated a cell in the table's top 1%, "
                  "top 0.1% or at its optimum, by validation accuracy (the table's value of the cell, not its reward). "
                  "Median over all runs, a run that never got there counting as infinitely slow (`-`: fewer than half "
                  "got there); mean over the runs that got there.", ""]
        lines += ["| agent | threshold (cells) | runs that got there | evaluations: median | mean (got there) "
                  "| simulated s: median | mean (got there) |", "|---|---|---|---|---|---|---|"]
        for r in reach_rows:
            lines.append(f"| {r['label']} | {r['threshold']} ≥ {100 * r['threshold_value']:.2f}% ({r['cells_at_or_above']}) "
                         f"| {100 * r['reached']:.0f}% | {_fmt(r['evals_median'], 1)} | {_fmt(r['evals_mean_reached'], 1)} "
                         f"| {_fmt(r['time_median_s'], 0)} | {_fmt(r['time_mean_reached_s'], 0)} |")
    lines += ["", "Agent settings:", ""]
    lines += [f"- {a['label']}: `{a['agent']}` {a['agent_kwargs']}" for a in agents]
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files) + "." if files else "", ""]
    if "curves_evaluations.png" in files:
        lines += ["![curves vs evaluations](curves_evaluations.png)", ""]
    if "time_to_threshold.png" in files:
        lines += ["![time to threshold](time_to_threshold.png)", ""]
    if timings:
        lines += ["## Timing (not reproducible; not part of the tables)", ""]
        for session in timings.get("sessions", []):
            per_run = list(session["runs"].values())
            when = "" if session.get("started", "-") == "-" else f"{session['started']}: "
            lines.append(f"- {when}{len(per_run)} runs in {session['total_wall_s']:.1f} s wall with "
                         f"{session['workers']} worker(s) ({session.get('cpu_count')} CPUs); per run: mean "
                         f"{np.mean(per_run):.2f} s, max {np.max(per_run):.2f} s")
        lines.append("")
    return "\n".join(lines)


def _agent_cells(a: dict[str, Any], spec: CompareSpec, has_test: bool, has_optimum: bool) -> list[str]:
    """One markdown table row of :func:`compare_markdown`."""
    cells = [a["label"] + (f" ({a['agent']})" if a["label"] != a["agent"] else ""), str(a["runs"]),
             _fmt(a["evaluations_mean"], 1), f"{_fmt(a['best_reward_mean'], 4)} ± {_fmt(a['best_reward_std'], 4)}"]
    if has_test:
        cells += [f"{_fmt(a['test_mean'])} ± {_fmt(a['test_std'])}", f"[{_fmt(a['test_ci_low'])}, {_fmt(a['test_ci_high'])}]"]
        if has_optimum:
            cells += [_fmt(a.get("regret_mean")), f"{100 * a['found_optimum']:.0f}%"]
    else:
        cells.append(f"[{_fmt(a['best_reward_ci_low'], 4)}, {_fmt(a['best_reward_ci_high'], 4)}]")
    if spec.reference_label:
        if a["label"] == spec.reference_label:
            cells.append("(reference)")
        elif "diff_vs_ref" in a:
            d = 2 if a["diff_of"] == "test_acc" else 4
            cells.append(f"{a['diff_vs_ref']:+.{d}f} [{a['diff_ci_low']:+.{d}f}, {a['diff_ci_high']:+.{d}f}], {p_text(a['diff_p'])}")
        else:
            cells.append("-")
    return cells


def md_code(text: str) -> str:
    """``text`` as inline code inside a markdown table cell (pipes escaped: NB201 strings are full of them)."""
    return "`" + text.replace("|", "\\|") + "`"


def _seed_range(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    return f"{s[0]}..{s[-1]}" if s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))


# ---------------------------------------------------------------------------------------------- one run
def write_run_report(run_dir: str | Path, k: int = 10, live: bool = False, refresh_s: int = 15) -> list[Path]:
    """Report on one search into ``RUN_DIR/report/``; returns the files written. ``live``: the search is still
    running, so ``index.html`` reloads itself every ``refresh_s`` seconds. Every file is replaced atomically."""
    from evaluation.report_html import architecture_of, run_figures, run_page

    trace = load_trace(run_dir)
    if not trace.steps:
        raise ValueError(f"{run_dir}: the search has told no evaluation yet; nothing to report")
    out = trace.run_dir / "report"
    cfg = trace.config
    title = f"{cfg.env_id}, {cfg.agent}, seed {cfg.seed}"
    seq = np.array([s.seq for s in trace.steps], dtype=float)
    rewards = trace.rewards()
    failed = np.array([s.status != "ok" for s in trace.steps])
    picked = trace.picked_test_so_far() if trace.has_test else None
    top = top_k(trace, k)
    n = rewards.size
    summary = _run_summary(trace)
    files = [
        plots.plot_run(seq, rewards, trace.best_so_far(), failed, out / "best_so_far.png", title, picked),
        plots.plot_reward_distribution(seq, rewards, min(10, n), max(2, min(20, n // 10 or 1)), out / "rewards.png", title),
        _write_text(out / "top_k.md", top_k_markdown(top, title)),
        _write_csv(out / "top_k.csv", top),
        _write_json(out / "summary.json", summary),
    ]
    figures = {f.name: f for f in files if f.suffix == ".png"}
    figures.update(run_figures(trace, out, title))
    if not live:  # the live page refreshes often; the policy view samples the controller twice
        policy = _policy_files(trace, out, title, summary)
        figures.update({f.name: f for f in policy if f.suffix == ".png"})
        files += [f for f in policy if f.suffix != ".png"]
    first = {}
    for step in trace.steps:
        first.setdefault(step.arch_key, step)
    drawn = [{**row, "arch": architecture_of(first[row["arch_key"]])} for row in top]
    html = run_page(trace, drawn, figures, summary, live, refresh_s)
    files += [f for name, f in figures.items() if name not in ("best_so_far.png", "rewards.png")]
    files.append(_write_text(out / "index.html", html))
    return files


def _policy_files(trace: RunTrace, out: Path, title: str, summary: dict[str, Any]) -> list[Path]:
    """What the controller learned (REINFORCE runs): policy.png, policy.md; adds its summary to ``summary``."""
    from evaluation.policy import plot_policy, policy_markdown, policy_view
    from evaluation.report_html import read_scalars

    view = policy_view(trace.run_dir)
    if view is None:
        return []
    summary["policy"] = view.summary()
    _write_json(out / "summary.json", summary)
    scalars = {name: values[:2] for name, values in read_scalars(trace.run_dir / "scalars.csv").items()}
    return [plot_policy(view, scalars, out / "policy.png", title),
            _write_text(out / "policy.md", policy_markdown(view, title))]


def top_k(trace: RunTrace, k: int) -> list[dict[str, Any]]:
    """The ``k`` best distinct architectures (by reward; ties: first told), with their stored result."""
    first: dict[str, Step] = {}
    for step in trace.steps:
        first.setdefault(step.arch_key, step)
    ranked = sorted(first.values(), key=lambda s: (-s.reward, s.seq))[:k]
    rows = []
    for rank, step in enumerate(ranked, 1):
        r = step.result
        rows.append({
            "rank": rank,
            "seq": step.seq,
            "reward": step.reward,
            "metric": None if r is None else r.metric,
            "status": step.status,
            "params": None if r is None else r.params,
            "test_acc": None if step.test_accuracy is None else step.test_accuracy * PCT,
            "architecture": architecture_string(step),
            "arch_key": step.arch_key,
        })
    return rows


def top_k_markdown(rows: list[dict[str, Any]], title: str) -> str:
    has_test = any(r["test_acc"] is not None for r in rows)
    header = ["rank", "told #", "reward", "metric", "status", "params"] + (["test acc (%)"] if has_test else []) + ["architecture"]
    lines = [f"# Top {len(rows)} architectures: {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["rank"]), str(r["seq"]), f"{r['reward']:.4g}", _fmt(r["metric"], 4), r["status"],
                 "-" if r["params"] is None else f"{r['params']:,}"]
        if has_test:
            cells.append(_fmt(r["test_acc"], 2))
        cells.append(md_code(r["architecture"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _run_summary(trace: RunTrace) -> dict[str, Any]:
    pick = trace.pick
    statuses: dict[str, int] = {}
    for s in trace.steps:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    return {
        "run": trace.run_dir.name,
        "config": trace.config.to_dict(),
        "evaluations": trace.num_evaluations,
        "distinct_architectures": len({s.arch_key for s in trace.steps}),
        "statuses": statuses,
        "simulated_time_s": float(trace.cumulative_time_s()[-1]),
        "best_reward": pick.reward,
        "best_seq": pick.seq,
        "best_architecture": architecture_string(pick),
        "best_test_acc": None if pick.test_accuracy is None else pick.test_accuracy * PCT,
    }


# ---------------------------------------------------------------------------------------------- writers
def _write_text(path: Path, text: str) -> Path:
    return write_atomic(path, text)


def _write_json(path: Path, data: Any) -> Path:
    return _write_text(path, json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")


def _plain(value: Any) -> Any:
    """JSON-safe: NaN -> None, tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    f = io.StringIO(newline="")
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return write_atomic(path, f.getvalue())


def _write_curves_csv(path: Path, curves: Sequence[Curve]) -> Path:
    rows = [
        {"label": c.label, "quantity": c.quantity, "axis": c.axis, "x": float(x), "mean": float(m),
         "ci_low": float(lo), "ci_high": float(hi), "n": int(n)}
        for c in curves
        for x, m, lo, hi, n in zip(c.x, c.mean, c.low, c.high, c.n)
    ]
    return _write_csv(path, rows)
