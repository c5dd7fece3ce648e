"""Does a reward agree with itself? The same N seeded architectures trained under one recipe with two training
seeds, and Kendall's tau and Spearman's rho between the two rewards (bootstrap intervals, ties).

A cheap reward cannot rank like a longer training better than it ranks like itself under another seed, so this
is the ceiling on what ``proxy_fidelity.py`` can show with one seed per budget. The architectures are
``proxy_fidelity.py``'s (``--seed`` draws them the same way), so its rows line up with these.
Each trained architecture is appended to ``<out>/part-<i>.jsonl`` at once; a rerun skips what is there.

    python benchmarks/reward_noise.py cifar --n 30 --train-seeds 0 1 --out runs/reward-noise --part 0 --parts 2 &
    python benchmarks/reward_noise.py cifar --n 30 --train-seeds 0 1 --out runs/reward-noise --part 1 --parts 2 &
    python benchmarks/reward_noise.py cifar --n 30 --train-seeds 0 1 --out runs/reward-noise --report
    python benchmarks/reward_noise.py cifar --n 16 --recipe long --out runs/reward-noise-long   # the long reward
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.ranking import rank_agreement
from proxy_fidelity import LONG_CIFAR, LONG_PTB, evaluators, finished_rows, pending


def run(args: argparse.Namespace) -> None:
    """Train this part's architectures under the recipe once per training seed, one JSON line each."""
    evs = {seed: evaluators(args.task, args.recipe, args.recipe, seed)[0] for seed in args.train_seeds}
    recipe = evs[args.train_seeds[0]].recipe.to_dict()
    evs[args.train_seeds[0]].prepare()  # the data and recipe checks are the same for every seed
    path, todo = pending(args)
    for name, arch in todo:
        row: dict = {"name": name, "arch": arch.to_dict(), "recipe": recipe}
        for seed, ev in evs.items():
            start = time.process_time()
            result = ev.evaluate(arch)
            cpu_s = time.process_time() - start
            row[str(seed)] = {"status": result.status.value, "metric": result.metric, "cpu_s": cpu_s}
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(name, *(f"seed {s}: {row[str(s)]['metric']}" for s in args.train_seeds), flush=True)


def report(args: argparse.Namespace) -> None:
    """Tau and rho between the first two training seeds over every finished architecture."""
    rows = finished_rows(args.out)
    first, second = (str(s) for s in args.train_seeds[:2])
    ok = [r for r in rows if r[first]["status"] == "ok" and r[second]["status"] == "ok"]
    if len(ok) < 3:
        raise SystemExit(f"{len(ok)} finished architectures in {args.out}: too few to rank")
    sign = -1.0 if args.task == "ptb" else 1.0  # perplexity: lower is better
    x = sign * np.array([r[first]["metric"] for r in ok])
    y = sign * np.array([r[second]["metric"] for r in ok])
    agree = rank_agreement(x, y, resamples=args.resamples, seed=args.seed)
    print(f"task {args.task}: {len(ok)} architectures trained with training seeds {first} and {second} "
          f"({len(rows) - len(ok)} failed under one of them)")
    print(f"  recipe: {json.dumps(ok[0]['recipe'], sort_keys=True)}")
    print(f"  mean |difference| of the rewards {np.mean(np.abs(x - y)):.4f}, rewards range {min(x.min(), y.min()):.4f}"
          f"-{max(x.max(), y.max()):.4f}")
    print(f"  Kendall tau {agree.tau:.3f} [{agree.tau_low:.3f}, {agree.tau_high:.3f}]  "
          f"Spearman rho {agree.rho:.3f} [{agree.rho_low:.3f}, {agree.rho_high:.3f}]  "
          f"(95% percentile bootstrap, {agree.resamples} resamples)")
    print(f"  tied values: seed {first} {agree.ties_x} of {agree.n}, seed {second} {agree.ties_y} of {agree.n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=["cifar", "ptb"])
    parser.add_argument("--n", type=int, default=30, help="architectures")
    parser.add_argument("--seed", type=int, default=0, help="architectures (as proxy_fidelity.py), bootstrap")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1], help="two (or more) training seeds")
    parser.add_argument("--recipe", default="cpu-demo",
                        help="a preset name, 'long' (proxy_fidelity.py's long recipe) or a JSON object of recipe fields")
    parser.add_argument("--out", type=Path, default=Path("runs/reward-noise"))
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--report", action="store_true", help="only print the agreement of what is finished")
    args = parser.parse_args()
    if args.n < 3 or not 0 <= args.part < args.parts or len(set(args.train_seeds)) < 2:
        parser.error("--n must be >= 3, 0 <= --part < --parts, and --train-seeds must name two different seeds")
    if args.recipe == "long":
        args.recipe = LONG_CIFAR if args.task == "cifar" else LONG_PTB
    elif args.recipe.lstrip().startswith("{"):
        try:
            args.recipe = json.loads(args.recipe)
        except json.JSONDecodeError as exc:
            parser.error(f"--recipe: not a JSON object ({exc})")
    try:
        evaluators(args.task, args.recipe, args.recipe, args.seed)
    except (TypeError, ValueError) as exc:
        parser.error(f"the recipe is wrong: {exc}")
    torch.set_num_threads(args.threads)
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
