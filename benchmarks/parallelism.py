"""What stale, asynchronous rewards cost each agent: NAS-Bench-201 search quality against the number of workers.

The paper trains 800 children at once, so the controller is told each reward long after it sampled the child;
it leaves open what that costs. Here every agent searches NB201 (CIFAR-10, the benchmark's protocol: the
12-epoch ``cifar10-valid`` accuracy as reward, the 200-epoch test accuracy of the validation-picked cell
reported) with P = 1, 8, 32 and 128 workers on the ``simulated`` executor: P children train at once on a
virtual clock, each for the table's training time, and a worker that frees up gets the next architecture
from the agent as it is then (asynchronous, as the paper's replicas).

Same total worker time for every P: a run is charged, like the protocol's sequential one, the training time
of the cells it was told, in the order they were told (completion order); the pick is made among the
results told until that charge reaches 12,000 s (the crossing one included, as NB201's code does). With P
workers the children still in flight at that moment are not counted, so every P spends 12,000 s of
training on the results it uses. P = 1 is exactly the NB201 protocol of ``compare_nb201.py``.

    python benchmarks/parallelism.py --seeds 100 --out runs/parallelism --figure docs/figures/nb201_parallelism.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from compare_nb201 import ENV_ID, ENV_KWARGS, REA_KWARGS, REINFORCE_KWARGS, SIMULATED_TIME_S
from evaluation import plots
from evaluation.compare import AgentSpec, run_compare
from evaluation.compare_spec import CompareSpec
from evaluation.report import load_compare_traces
from evaluation.stats import mean_ci, welch_difference
from evaluation.traces import RunTrace
from nas_cli.evaluation import parse_seeds

BUDGET = 10_000  # never reached: the simulated-time budget ends every run
AGENTS = [AgentSpec("random", "random"), AgentSpec("evolution", "evolution", dict(REA_KWARGS)),
          AgentSpec("reinforce", "reinforce", dict(REINFORCE_KWARGS))]  # fmt: skip


def parallel_spec(workers: int, seeds: list[int], agents: list[AgentSpec]) -> CompareSpec:
    """The NB201 protocol with ``workers`` children in flight on the virtual clock."""
    return CompareSpec(
        env_id=ENV_ID, agents=agents, seeds=seeds, budget=BUDGET, env_kwargs=dict(ENV_KWARGS),
        max_simulated_time_s=SIMULATED_TIME_S, executor={"executor": "simulated", "max_in_flight": workers},
    )


def within_budget(trace: RunTrace, budget_s: float = SIMULATED_TIME_S) -> int:
    """How many told results the protocol's charge admits: up to and including the one that crosses ``budget_s``."""
    spent = trace.cumulative_time_s()
    crossing = np.flatnonzero(spent >= budget_s)
    return int(crossing[0]) + 1 if crossing.size else len(spent)


def run_figures(trace: RunTrace) -> dict[str, float]:
    """Test accuracy (%) of the cell picked within the budget, and how many results that used."""
    used = within_budget(trace)
    pick = trace.steps[trace.pick_index(upto=used)]
    assert pick.test_accuracy is not None, f"{trace.run_dir}: no test accuracy in the table's result"
    return {"test": 100.0 * pick.test_accuracy, "evaluations": float(used), "told": float(trace.num_evaluations)}


def table(results: dict[str, dict[int, list[dict[str, float]]]], workers: list[int]) -> str:
    """Markdown: mean +- std, 95% CI, evaluations used, and the difference against the same agent at P = 1."""
    lines = ["| agent | P | test acc (%) mean ± std | 95% CI | evaluations used | told | vs P = 1 (95% CI) |",
             "|---|---|---|---|---|---|---|"]
    for label, by_p in results.items():
        base = [r["test"] for r in by_p[workers[0]]]
        for p in workers:
            tests = [r["test"] for r in by_p[p]]
            ci = mean_ci(tests)
            diff = "" if p == workers[0] else (
                lambda w: f"{w.diff:+.2f} [{w.ci_low:+.2f}, {w.ci_high:+.2f}]")(welch_difference(tests, base))
            lines.append(f"| {label} | {p} | {ci.mean:.2f} ± {ci.std:.2f} | "
                         f"[{ci.ci_low:.2f}, {ci.ci_high:.2f}] | {np.mean([r['evaluations'] for r in by_p[p]]):.1f} | "
                         f"{np.mean([r['told'] for r in by_p[p]]):.1f} | {diff} |")
    return "\n".join(lines) + "\n"


def figure(results: dict[str, dict[int, list[dict[str, float]]]], workers: list[int], path: Path) -> Path:
    """Test accuracy of the picked cell against P (log scale), mean with its 95% CI, one line per agent."""
    fig = plots.new_figure(1, width=6.0)
    ax = fig.subplots()
    for i, (label, by_p) in enumerate(results.items()):
        cis = [mean_ci([r["test"] for r in by_p[p]]) for p in workers]
        x = np.array(workers, dtype=float) * (1.0 + 0.04 * (i - 1))  # a small offset keeps the bars apart
        mean = np.array([c.mean for c in cis])
        err = np.array([[c.mean - c.ci_low for c in cis], [c.ci_high - c.mean for c in cis]])
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(workers, [str(p) for p in workers])
    ax.set_xlabel("workers P (children training at once)")
    ax.set_ylabel("CIFAR-10 test accuracy of the pick (%)")
    ax.set_title("NAS-Bench-201, 12,000 s of training per run (mean, 95% CI)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return plots.save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(100)), help="N (0..N-1) or A..B")
    parser.add_argument("--workers", default="1,8,32,128", help="comma-separated values of P")
    parser.add_argument("--out", type=Path, default=Path("runs/parallelism"))
    parser.add_argument("--figure", type=Path, default=None, help="where to copy the figure (PNG)")
    parser.add_argument("--procs", type=int, default=1, help="processes running searches side by side")
    args = parser.parse_args(argv)
    workers = sorted(int(p) for p in args.workers.split(","))
    results: dict[str, dict[int, list[dict[str, float]]]] = {a.label: {} for a in AGENTS}
    start = time.perf_counter()
    for p in workers:
        spec = parallel_spec(p, args.seeds, AGENTS)
        t0 = time.perf_counter()
        run_compare(args.out / f"P{p}", spec, args.procs)
        traces = load_compare_traces(args.out / f"P{p}", spec)
        for label, runs in traces.items():
            results[label][p] = [run_figures(t) for t in runs]
        print(f"P = {p}: {len(args.seeds) * len(AGENTS)} runs in {time.perf_counter() - t0:.0f} s", flush=True)
    text = table(results, workers)
    print(text)
    (args.out / "parallelism.md").write_text(text)
    path = figure(results, workers, args.out / "nb201_parallelism.png")
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        args.figure.write_bytes(path.read_bytes())
    print(f"{len(workers) * len(args.seeds) * len(AGENTS)} runs in {time.perf_counter() - start:.0f} s; figure {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
