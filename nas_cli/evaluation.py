"""``nas compare``, ``nas report``, ``nas retrain`` and ``nas export`` (added to the ``nas`` parser by :func:`add_commands`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from evaluation.compare import DEFAULT_EXECUTOR, CompareError, CompareSpec, parse_agents
from nas_cli.arguments import json_object


def _agent_kwargs(text: str) -> tuple[str, dict[str, Any]]:
    """``LABEL=JSON`` (LABEL as in --agents: the agent's name, or the LABEL of a LABEL:AGENT item)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected AGENT=JSON, got {text!r}")
    return name.strip(), json_object(value)


def parse_seeds(text: str) -> list[int]:
    """``N`` (seeds 0..N-1), ``A..B`` (inclusive) or ``a,b,c``."""
    try:
        if ".." in text:
            start, end = (int(x) for x in text.split(".."))
            return list(range(start, end + 1))
        if "," in text:
            return [int(x) for x in text.split(",") if x.strip()]
        count = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"seeds: expected N, A..B or a,b,c; got {text!r}") from exc
    if count < 1:
        raise argparse.ArgumentTypeError(f"seeds: need at least 1, got {count}")
    return list(range(count))


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``compare``, ``report``, ``retrain`` and ``export`` to the ``nas`` sub-commands."""
    _add_compare(sub)
    _add_report(sub)
    _add_retrain(sub)
    _add_export(sub)


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    from slurm.config import ExecutorConfig

    p = sub.add_parser(
        "retrain",
        help="retrain the best architectures of a CIFAR-10 search over a grid; report test accuracy",
        description="Retrain the top architectures of RUN_DIR at every point of a grid over lr, weight decay and "
        "batch-norm epsilon, choose each one's point on validation accuracy, and report its test accuracy. "
        "Results go to RUN_DIR/retrain/ as they arrive; running it again finishes what is missing.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--top", type=int, default=5, help="how many of the search's best architectures (default: 5)")
    p.add_argument("--grid", type=json_object, default=None,
                   help='JSON object of value lists, e.g. \'{"lr": [0.05, 0.1], "bn_eps": [1e-5, 1e-3]}\' '
                        "(default: lr 0.05/0.1 x weight decay 1e-4/5e-4 x bn_eps 1e-5/1e-3)")  # fmt: skip
    p.add_argument("--recipe", default="paper", help="how each child is retrained: a preset (paper, cpu-demo, tiny) "
                   "or a JSON object of TrainingRecipe fields (default: %(default)s)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (e.g. longer than the search)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: the search's, NAS_DATA_DIR, download)")
    ExecutorConfig.add_arguments(p)
    p.set_defaults(func=cmd_retrain)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="save a retrained architecture as a plain PyTorch program (torch.export)",
        description="Write the RANK-th best retrained architecture of RUN_DIR (by validation accuracy), with its "
        "trained weights, as a torch.export program that runs with torch alone, and a JSON file beside it.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, help="the .pt2 file to write")
    p.add_argument("--rank", type=int, default=1)
    p.set_defaults(func=cmd_export)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="run several agents on the same budget and seeds, and report them side by side",
        description="Run every agent for every seed (one search run dir each, under OUT/runs/), then write "
        "a table of the test accuracy of each run's validation pick (markdown, CSV, JSON) and best-so-far "
        "curves with 95%% confidence bands into OUT. Re-running into the same OUT resumes: finished runs are kept.",
    )
    p.add_argument("--env", default="NAS-Bench-201-v0", help="registered environment id (default: %(default)s)")
    p.add_argument("--env-kwargs", type=json_object, default={}, help="gym.make kwargs as a JSON object")
    p.add_argument("--agents", required=True,
                   help="comma-separated AGENT or LABEL:AGENT items, e.g. reinforce,random,rea:evolution")
    p.add_argument("--agent-kwargs", type=_agent_kwargs, action="append", default=[], metavar="LABEL=JSON",
                   help="hyperparameters of one competitor, by its label in --agents (repeatable)")
    p.add_argument("--seeds", type=parse_seeds, default=list(range(10)),
                   help="N (seeds 0..N-1), A..B or a,b,c (default: 10)")
    p.add_argument("--budget", type=int, default=100, help="architectures per run (default: %(default)s)")
    p.add_argument("--simulated-time", type=float, default=None, metavar="S",
                   help="also stop a run once its simulated training time reaches S seconds (tabular benchmarks)")
    p.add_argument("--wall-time", type=float, default=None, help="stop each run after this many seconds")
    p.add_argument("--executor", type=json_object, default=dict(DEFAULT_EXECUTOR),
                   help="executor settings of every run as JSON (default: %(default)s)")
    p.add_argument("--rank", choices=("given", "pareto"), default="given",
                   help="order of the agents in the table: as given, or by Pareto rank on (params, accuracy) of the picks")
    p.add_argument("--reference", default=None, help="agent label the others are compared with (default: random)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPU count)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no line per finished run")
    p.set_defaults(func=cmd_compare)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="an HTML page, plots and a top-k table of one search",
        description="Write index.html (one self-contained page), best_so_far.png, rewards.png, agent_scalars.png, "
        "pareto.png, top_k.md/csv and summary.json into RUN_DIR/report/. With --serve, also serve RUN_DIR on "
        "127.0.0.1 (for ssh -L PORT:127.0.0.1:PORT) until Ctrl-C.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--top", type=int, default=10, help="rows of the top-k table (default: %(default)s)")
    p.add_argument("--serve", action="store_true", help="serve RUN_DIR on 127.0.0.1 until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="port of --serve (0: any free one; default: %(default)s)")
    p.add_argument("--serve-for", type=float, default=None, metavar="S", help="stop serving after S seconds")
    p.set_defaults(func=cmd_report)


def _error(command: str, message: str) -> int:
    print(f"nas {command}: error: {message}", file=sys.stderr)
    return 2


def cmd_compare(args: argparse.Namespace) -> int:
    """``nas compare``: 0 on success, 1 if some runs failed, 2 for a bad command line."""
    from evaluation.compare import run_compare

    try:
        agents = parse_agents(args.agents, dict(args.agent_kwargs))
        spec = CompareSpec(
            env_id=args.env, agents=agents, seeds=args.seeds, budget=args.budget, env_kwargs=args.env_kwargs,
            max_simulated_time_s=args.simulated_time, max_wall_time_s=args.wall_time, executor=args.executor,
            reference=args.reference,
        )
    except (CompareError, ValueError, TypeError) as exc:
        return _error("compare", str(exc))
    start = time.perf_counter()
    print(f"{len(agents)} agents x {len(spec.seeds)} seeds = {len(agents) * len(spec.seeds)} runs into {args.out}")
    try:
        report = run_compare(args.out, spec, args.workers, log=None if args.quiet else print, rank=args.rank)
    except CompareError as exc:
        print(f"nas compare: {exc}", file=sys.stderr)
        return 1
    print((args.out / "summary.md").read_text())
    print(f"wall time {time.perf_counter() - start:.1f} s; report files:")
    for path in report.files:
        print(f"  {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``nas report``: 0 on success, 2 if RUN_DIR is not a run directory or holds no result."""
    from evaluation.report import write_run_report
    from evaluation.traces import RunDirError

    try:
        files = write_run_report(args.run_dir, args.top)
    except (RunDirError, ValueError) as exc:
        if not (args.serve and isinstance(exc, ValueError) and not isinstance(exc, RunDirError)):
            return _error("report", str(exc))
        files = []  # nothing told yet: serve what the search will write
    if files:
        print(f"report written to {args.run_dir / 'report'}:")
        for path in files:
            print(f"  {path}")
        print()
        print((args.run_dir / "report" / "top_k.md").read_text())
        policy = args.run_dir / "report" / "policy.md"
        if policy.is_file():  # a REINFORCE run: what its controller learned
            print(policy.read_text())
    if args.serve:
        return _serve(args)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from evaluation.live import serve

    def ready(url: str) -> None:
        port = url.split(":")[2].split("/")[0]
        print(f"serving {args.run_dir} at {url} (Ctrl-C stops)")
        print(f"from another machine: ssh -L {port}:127.0.0.1:{port} THIS_HOST, then open {url}", flush=True)

    try:
        serve(args.run_dir, args.port, timeout_s=args.serve_for, on_ready=ready)
    except OSError as exc:
        return _error("report", f"cannot serve on 127.0.0.1:{args.port}: {exc}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """``nas retrain``: 0 when every architecture has a retrained result, 1 if some have none."""
    from evaluation.retrain import retrain
    from nas_env.evaluators import resolve_recipe
    from slurm.config import ExecutorConfig

    recipe: Any = json_object(args.recipe) if args.recipe.lstrip().startswith("{") else args.recipe
    if args.epochs is not None:
        recipe = {**resolve_recipe(recipe).to_dict(), "epochs": args.epochs}
    rows = retrain(args.run_dir, top=args.top, grid=args.grid, recipe=recipe,
                   executor=ExecutorConfig.from_args(args).to_dict(), device=args.device, seed=args.seed,
                   data_dir=args.data_dir)  # fmt: skip
    print()
    print((args.run_dir / "retrain" / "summary.md").read_text())
    return 0 if all(r.chosen for r in rows) else 1


def cmd_export(args: argparse.Namespace) -> int:
    """``nas export``: write the program and its JSON description."""
    from evaluation.export import export_retrained

    meta = export_retrained(args.run_dir, args.out, rank=args.rank)
    print(f"wrote {args.out} and {args.out}.json: {meta['input']} -> {meta['output']}")
    print(f"validation accuracy {meta['val_accuracy']:.4f}, test accuracy {meta['test_accuracy']:.4f}; "
          f"load it with {meta['load_with']}")  # fmt: skip
    return 0
