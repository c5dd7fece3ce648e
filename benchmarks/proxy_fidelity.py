"""Does the cheap reward rank architectures like a 10x longer training does? Kendall's tau and Spearman's rho.

``cifar``: N seeded random architectures of the paper's 6-layer CNN space, each trained under a cheap
recipe and under a long one (at least 10x the cheap one's training work) on the same real CIFAR-10 split,
through ``TrainingEvaluator`` exactly as a search scores them (metric: the best validation accuracy of
the last 5 epochs). ``ptb``: the same for language-model cells (the paper's Figure 5 cell, an LSTM-like
cell, seeded random 8-leaf cells) through ``PTBEvaluator`` (metric: validation perplexity).
``nb201``: the calibration, no training: NAS-Bench-201's own 12-epoch against 200-epoch validation
accuracy, over the whole table and over random samples of N architectures (what good looks like at N).

Each trained architecture is appended to a JSON-lines file as soon as both its rewards are in, so a
partial run still reports; a rerun skips what is there. ``--part i --parts k`` splits the work among k
processes (files ``part-i.jsonl`` in ``--out``); ``--report`` reads them all and prints the table.

Example::

    python benchmarks/proxy_fidelity.py cifar --n 30 --out runs/fidelity --part 0 --parts 2 &
    python benchmarks/proxy_fidelity.py cifar --n 30 --out runs/fidelity --part 1 --parts 2 &
    python benchmarks/proxy_fidelity.py cifar --out runs/fidelity --report
    python benchmarks/proxy_fidelity.py nb201 --n 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.ranking import kendall_tau, rank_agreement, spearman_rho
from nas_env.evaluators import RECIPE_PRESETS, TrainingEvaluator
from nas_env.ptb_evaluator import LM_RECIPE_PRESETS, PTBEvaluator
from nas_env.spaces.cnn import CNNSpace
from nas_env.spaces.rnn_cell import RNNCellArchitecture, RNNCellSpace, paper_example
from nas_env.tabular import NB201Table

#: the long CIFAR recipe: 16x16 (4x the cheap one's pixels), 20 epochs (2.5x), augmentation: 10x the work
LONG_CIFAR = {"epochs": 20, "train_images": 4992, "val_images": 555, "resolution": 16, "batch_size": 128,
              "lr": 0.1, "warmup": 0.05, "lr_schedule": "cosine", "label_smoothing": 0.1, "augment": True}
#: the long PTB recipe: 6 passes over the whole training split (929,589 tokens), 11x the cheap one's 500,000
#: tokens, the same model sizes and optimiser
LONG_PTB = {**LM_RECIPE_PRESETS["cpu-demo"], "epochs": 6, "train_tokens": None}


#: readings of a cheap validation curve besides the reward's (the best of the last 5 epochs), as an analysis
CHEAP_READINGS = {
    "the mean of the last 3 epochs": lambda curve: float(np.mean(curve[-3:])),
    "the last epoch": lambda curve: float(curve[-1]),
}


def lstm_like(num_leaves: int = 8) -> RNNCellArchitecture:
    """A cell shaped like an LSTM: gates from sigmoid leaves multiplied with tanh candidates, the memory
    added in before the root, which emits through tanh (the space cannot express an LSTM exactly)."""
    leaves = [("add", "sigmoid"), ("add", "tanh")] * (num_leaves // 2)
    internal = [("elem_mult", "identity")] * (num_leaves // 2)
    while len(leaves) + len(internal) < 2 * num_leaves - 2:
        internal.append(("add", "identity"))
    nodes = (*leaves, *internal, ("add", "tanh"))
    return RNNCellArchitecture(nodes=nodes, inject=("add", "identity"), cell_from=len(nodes) - 2,
                               inject_into=len(nodes) - 2)  # fmt: skip


def architectures(task: str, n: int, seed: int) -> list[tuple[str, Any]]:
    """(name, architecture) for the task, in a seeded order that does not depend on n's later entries."""
    if task == "cifar":
        space = CNNSpace(6)
        return [(f"cnn-{i}", space.sample(np.random.default_rng([seed, i]))) for i in range(n)]
    space = RNNCellSpace(8)
    named = [("figure5", paper_example()), ("lstm-like", lstm_like())]
    return named + [(f"cell-{i}", space.sample(np.random.default_rng([seed, i]))) for i in range(max(0, n - 2))]


def evaluators(task: str, cheap: Any, long: Any, seed: int) -> tuple[Any, Any]:
    """The (cheap, long) evaluators a search would use, on the CPU, the data never downloaded."""
    if task == "cifar":
        return (TrainingEvaluator(recipe=cheap, device="cpu", seed=seed, download=False),
                TrainingEvaluator(recipe=long, device="cpu", seed=seed, download=False))  # fmt: skip
    return (PTBEvaluator(recipe=cheap, device="cpu", seed=seed, download=False),
            PTBEvaluator(recipe=long, device="cpu", seed=seed, download=False))  # fmt: skip


def pending(args: argparse.Namespace) -> tuple[Path, list[tuple[str, Any]]]:
    """This part's JSON-lines file in ``args.out`` and its architectures not yet in it (``--part i --parts k``)."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"part-{args.part}.jsonl"
    done = {json.loads(line)["name"] for line in path.read_text().splitlines()} if path.exists() else set()
    named = architectures(args.task, args.n, args.seed)
    mine = [(name, arch) for k, (name, arch) in enumerate(named) if k % args.parts == args.part]
    return path, [(name, arch) for name, arch in mine if name not in done]


def finished_rows(out: Path) -> list[dict[str, Any]]:
    """Every row of every part file in ``out``."""
    return [json.loads(line) for p in sorted(out.glob("part-*.jsonl")) for line in p.read_text().splitlines()]


def run(args: argparse.Namespace) -> None:
    """Train this part's architectures under both recipes, one JSON line each."""
    cheap_ev, long_ev = evaluators(args.task, args.cheap, args.long, args.seed)
    cheap_ev.prepare()
    long_ev.prepare()
    path, todo = pending(args)
    for name, arch in todo:
        row: dict[str, Any] = {"name": name, "arch": arch.to_dict()}
        for label, ev in (("cheap", cheap_ev), ("long", long_ev)):
            start = time.process_time()
            result = ev.evaluate(arch)
            row[label] = {"status": result.status.value, "metric": result.metric, "curve": list(result.curve),
                          "wall_s": result.wall_time_s, "cpu_s": time.process_time() - start}  # fmt: skip
        row["recipes"] = {"cheap": cheap_ev.recipe.to_dict(), "long": long_ev.recipe.to_dict()}
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: cheap {row['cheap']['metric']} ({row['cheap']['wall_s']:.1f} s), "
              f"long {row['long']['metric']} ({row['long']['wall_s']:.1f} s)", flush=True)


def report(args: argparse.Namespace) -> None:
    """The table of every part's finished rows: N, tau, rho with bootstrap intervals, ties, times."""
    rows = finished_rows(args.out)
    ok = [r for r in rows if r["cheap"]["status"] == "ok" and r["long"]["status"] == "ok"]
    if len(ok) < 3:
        raise SystemExit(f"{len(ok)} finished architectures in {args.out}: too few to rank")
    cheap = np.array([r["cheap"]["metric"] for r in ok])
    long = np.array([r["long"]["metric"] for r in ok])
    if args.task == "ptb":  # lower perplexity is better: rank on the negated value (reward order)
        cheap, long = -cheap, -long
    agree = rank_agreement(cheap, long, resamples=args.resamples, seed=args.seed)
    print(f"task {args.task}: {len(ok)} architectures trained under both recipes ({len(rows) - len(ok)} failed)")
    if args.task == "cifar":  # other readings of the same cheap curves (an analysis; the reward is the first)
        for label, read in CHEAP_READINGS.items():
            other = np.array([read(r["cheap"]["curve"]) for r in ok])
            print(f"  cheap curve read as {label}: Kendall tau {kendall_tau(other, long):.3f}, "
                  f"Spearman rho {spearman_rho(other, long):.3f}")
    for label in ("cheap", "long"):
        print(f"  {label} recipe: {json.dumps(ok[0]['recipes'][label], sort_keys=True)}")
        metric = np.abs([r[label]["metric"] for r in ok])
        print(f"    metric median {np.median(metric):.4f} (range {metric.min():.4f}-{metric.max():.4f}), "
              f"training wall s median {statistics.median(r[label]['wall_s'] for r in ok):.1f}, "
              f"CPU s median {statistics.median(r[label]['cpu_s'] for r in ok):.1f}")
    print(f"  Kendall tau {agree.tau:.3f} [{agree.tau_low:.3f}, {agree.tau_high:.3f}]  "
          f"Spearman rho {agree.rho:.3f} [{agree.rho_low:.3f}, {agree.rho_high:.3f}]  "
          f"(95% percentile bootstrap, {agree.resamples} resamples)")
    print(f"  tied values: cheap {agree.ties_x} of {agree.n}, long {agree.ties_y} of {agree.n}")
    if args.task == "ptb":
        for r in ok:
            print(f"    {r['name']:<10} cheap ppl {r['cheap']['metric']:8.1f}  long ppl {r['long']['metric']:8.1f}")


def calibrate(args: argparse.Namespace) -> None:
    """NB201's 12-epoch against 200-epoch validation accuracy: the whole table, and samples of n."""
    table = NB201Table.load()
    short = table.column("cifar10valid_valid_acc_12ep")
    full = table.column("cifar10valid_valid_acc_200ep")
    print(f"NAS-Bench-201 cifar10-valid, validation accuracy after 12 vs 200 epochs, all {len(short)} cells:")
    print(f"  Kendall tau {kendall_tau(short, full):.3f}  Spearman rho {spearman_rho(short, full):.3f}")
    rng = np.random.default_rng(args.seed)
    taus, rhos = [], []
    for _ in range(args.samples):
        idx = rng.choice(len(short), args.n, replace=False)
        taus.append(kendall_tau(short[idx], full[idx]))
        rhos.append(spearman_rho(short[idx], full[idx]))
    q = lambda v: np.percentile(v, [2.5, 50, 97.5])  # noqa: E731
    (tl, tm, th), (rl, rm, rh) = q(taus), q(rhos)
    print(f"  {args.samples} random samples of {args.n} cells: tau median {tm:.3f} [{tl:.3f}, {th:.3f}], "
          f"rho median {rm:.3f} [{rl:.3f}, {rh:.3f}] (2.5-97.5 percentiles)")
    agree = rank_agreement(short[idx], full[idx], resamples=args.resamples, seed=args.seed)
    print(f"  the last sample's bootstrap interval, as a trained run reports it: tau {agree.tau:.3f} "
          f"[{agree.tau_low:.3f}, {agree.tau_high:.3f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=["cifar", "ptb", "nb201"])
    parser.add_argument("--n", type=int, default=30, help="architectures (cells for ptb, sample size for nb201)")
    parser.add_argument("--seed", type=int, default=0, help="architecture sampling, training and bootstrap seed")
    parser.add_argument("--cheap", default="cpu-demo", help="cheap recipe: a preset name or a JSON object")
    parser.add_argument("--long", default=None, help="long recipe (JSON object or preset); default: the script's")
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--samples", type=int, default=1000, help="nb201: random samples of --n cells")
    parser.add_argument("--report", action="store_true", help="only print the table of what is finished")
    args = parser.parse_args()
    if args.n < 3 or not 0 <= args.part < args.parts:
        parser.error("--n must be >= 3 and 0 <= --part < --parts")
    presets = RECIPE_PRESETS if args.task == "cifar" else LM_RECIPE_PRESETS
    for name in ("cheap", "long"):
        value = getattr(args, name)
        if value is None:
            setattr(args, name, LONG_CIFAR if args.task == "cifar" else LONG_PTB)
        elif value.lstrip().startswith("{"):
            try:
                setattr(args, name, json.loads(value))
            except json.JSONDecodeError as exc:
                parser.error(f"--{name}: not a JSON object ({exc}); give a preset name or a JSON object of recipe fields")
        elif value not in presets:
            parser.error(f"--{name} {value!r}: not a preset ({', '.join(presets)}) nor a JSON object")
    if args.task != "nb201":
        try:
            evaluators(args.task, args.cheap, args.long, args.seed)
        except (TypeError, ValueError) as exc:
            parser.error(f"a recipe is wrong: {exc}")
    torch.set_num_threads(args.threads)
    if args.task == "nb201":
        calibrate(args)
    elif args.report:
        report(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
