"""Measured comparison of the SB3 baselines against the project's REINFORCE controller and random search.

Every agent gets the same architecture budget on the same environment (default ``NAS-Synthetic-v0``: the
paper's 6-layer CNN token space, 33 decisions, reward = fraction of decisions equal to a hidden target,
so the optimum is exactly 1.0 and an evaluation is free), the same executor (``inline``, ``max_in_flight``
= ``--parallel``: SB3 runs ``--parallel`` envs, the ask/tell agents keep ``--parallel`` proposals in
flight) and the same seeds. Each run is a real run directory (``nas search`` would write the same one);
the numbers are read back from its store in the order the results were told.

Reported per agent, mean ± std over seeds: the best reward found within the budget, and the mean reward of
the last 100 architectures (how good the policy is at the end, not just whether it got lucky once).

    python benchmarks/bench_sb3_vs_reinforce.py --budget 1000 --seeds 0 1 2 --workers 2

writes ``runs/bench_sb3_vs_reinforce/`` (run directories, ``results.json``, ``table.md``) and the figure
``docs/figures/sb3_vs_reinforce.png`` (best-so-far and moving-average reward against evaluations).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from evaluation.stats import Difference, welch_difference

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AGENTS = ("reinforce", "random", "ppo", "a2c", "maskable-ppo", "recurrent-ppo")


def parse_agent(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME:JSON`` (hyperparameters, e.g. ``reinforce:{"lr": 0.005}``) -> (name, agent_kwargs)."""
    name, sep, kwargs = spec.partition(":")
    return name, (json.loads(kwargs) if sep else {})


def run_one(env_id: str, spec: str, seed: int, budget: int, parallel: int, out: str) -> dict[str, Any]:
    """One search in its own run directory; returns its rewards in told order and its wall time."""
    import torch

    torch.set_num_threads(1)  # one core per run: the runs themselves are spread over the workers
    from agents.run_dir import SearchConfig
    from agents.search import run_search
    from nas_env.store import ResultStore

    agent, agent_kwargs = parse_agent(spec)
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", spec).strip("_")
    run_dir = Path(out) / "runs" / f"{slug}-s{seed}"
    config = SearchConfig(
        env_id=env_id,
        agent=agent,
        agent_kwargs=agent_kwargs,
        seed=seed,
        budget=budget,
        executor={"executor": "inline", "max_in_flight": parallel},
    )
    start = time.perf_counter()
    run_search(run_dir, config)
    wall = time.perf_counter() - start
    with ResultStore(run_dir / "store.sqlite") as store:
        rewards = [float(r.reward) for r in store.told()]
    return {"agent": spec, "seed": seed, "rewards": rewards, "wall_time_s": wall}


def summarize(runs: list[dict[str, Any]], agents: list[str], last: int = 100) -> list[dict[str, Any]]:
    """Per agent: mean ± std over seeds of the final best reward and of the mean of the last ``last`` rewards,
    and (when random search ran too) that mean's difference to random search's (Welch, 95% CI, p)."""
    tails = {agent: [statistics.fmean(r["rewards"][-last:]) for r in runs if r["agent"] == agent] for agent in agents}
    random_tail = tails.get("random", [])
    rows = []
    for agent in agents:
        mine = [r for r in runs if r["agent"] == agent]
        best = [max(r["rewards"]) for r in mine]
        tail = tails[agent]
        wall = [r["wall_time_s"] for r in mine]
        versus = None
        if agent != "random" and len(tail) > 1 and len(random_tail) > 1:
            versus = welch_difference(tail, random_tail).to_dict()
        rows.append(
            {
                "agent": agent,
                "seeds": len(mine),
                "best_mean": statistics.fmean(best),
                "best_std": statistics.stdev(best) if len(best) > 1 else 0.0,
                "last_mean": statistics.fmean(tail),
                "last_std": statistics.stdev(tail) if len(tail) > 1 else 0.0,
                "wall_s": statistics.fmean(wall),
                "last_minus_random": versus,
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]], budget: int, last: int = 100) -> str:
    lines = [
        f"| agent | seeds | best reward in {budget} evals | mean reward of last {last} | last {last} − random's "
        "[95% CI], p | wall time / run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["last_minus_random"]
        versus = Difference(**d).text() if d else ""
        lines.append(
            f"| {r['agent']} | {r['seeds']} | {r['best_mean']:.3f} ± {r['best_std']:.3f} | "
            f"{r['last_mean']:.3f} ± {r['last_std']:.3f} | {versus} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], agents: list[str], path: Path, window: int = 100) -> None:
    """Best-so-far and moving-average reward against evaluations, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for agent in agents:
        curves = [np.asarray(r["rewards"]) for r in runs if r["agent"] == agent]
        n = min(len(c) for c in curves)
        best = np.stack([np.maximum.accumulate(c[:n]) for c in curves])
        kernel = np.ones(window) / window
        smooth = np.stack([np.convolve(c[:n], kernel, mode="valid") for c in curves])
        for ax, data, x0 in ((axes[0], best, 1), (axes[1], smooth, window)):
            x = np.arange(x0, x0 + data.shape[1])
            mean, std = data.mean(0), data.std(0)
            ax.plot(x, mean, label=agent)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    axes[0].set(title="best reward so far", xlabel="evaluated architectures", ylabel="reward")
    axes[1].set(title=f"mean reward of the last {window} architectures", xlabel="evaluated architectures")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="NAS-Synthetic-v0")
    p.add_argument("--agents", nargs="+", default=list(DEFAULT_AGENTS),
                   help='agent names, or NAME:JSON for non-default hyperparameters (reinforce:\'{"lr": 0.005}\')')
    p.add_argument("--budget", type=int, default=1000, help="evaluated architectures per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--parallel", type=int, default=8, help="max_in_flight (= n_envs of the SB3 agents)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="runs at once")
    p.add_argument("--out", type=Path, default=Path("runs/bench_sb3_vs_reinforce"))
    p.add_argument("--figure", type=Path, default=REPO_ROOT / "docs" / "figures" / "sb3_vs_reinforce.png")
    args = p.parse_args(argv)

    if args.out.exists() and any((args.out / "runs").glob("*")):
        p.error(f"{args.out} already holds runs; choose another --out (runs are never mixed)")
    jobs = [(args.env, a, s, args.budget, args.parallel, str(args.out)) for s in args.seeds for a in args.agents]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(run_one, *zip(*jobs)))
    rows = summarize(runs, args.agents)
    table = markdown_table(rows, args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs, "rows": rows}, default=str))
    (args.out / "table.md").write_text(table + "\n")
    plot(runs, args.agents, args.figure)
    print(f"{args.env}, budget {args.budget}, seeds {args.seeds}, parallel {args.parallel}\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
