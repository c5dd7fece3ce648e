"""``nas search``: run (or resume) an architecture search with any agent on any executor."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from agents.registry import ALL_AGENTS
from nas_cli.arguments import json_object

DEFAULT_ENV = "NAS-CIFAR10-v0"
DEFAULT_AGENT = "reinforce"
#: ids whose reward is a table lookup: their children run in the driver unless --executor says otherwise (a job
#: per child would cost a second of process start-up for a lookup of microseconds)
LOOKUP_ENVS = ("NAS-Bench-201-v0",)


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add ``search`` to the ``nas`` sub-commands."""
    _add_search_parser(sub)


def _add_search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="run (or resume) an architecture search",
        description="Search architectures with an agent; every evaluation lands in RUN_DIR/store.sqlite.",
    )
    p.add_argument("--env", default=None, help=f"registered environment id (default: {DEFAULT_ENV})")
    p.add_argument("--agent", default=None, choices=ALL_AGENTS, help=f"(default: {DEFAULT_AGENT})")
    p.add_argument("--budget", type=int, default=None,
                   help="number of architectures to evaluate (default: 6; with --resume: the run's own, or raise it)")
    p.add_argument("--parallel", type=int, default=None, help="evaluations in flight at once (default: 1)")
    p.add_argument("--seed", type=int, default=None, help="(default: 0)")
    p.add_argument("--wall-time", type=float, default=None, help="stop asking for more after this many seconds")
    p.add_argument("--run-dir", type=Path, default=None, help="where to write the run (default: runs/<env>-<agent>-<time>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue the search in RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--top", type=int, default=5, help="how many of the best architectures to print")
    p.add_argument("--report-every", type=int, default=10, metavar="N",
                   help="rewrite RUN_DIR/report/ (index.html reloads itself) every N told results and at the end; "
                   "0: no report (default: %(default)s)")  # fmt: skip

    g = p.add_argument_group("child training (NAS-CIFAR10-v0, NAS-PTB-v0)")
    g.add_argument(
        "--recipe",
        default="auto",
        help="how each child is trained: a preset (paper, cpu-demo, tiny; auto = paper on a GPU, cpu-demo on a "
        "CPU) or a JSON object of TrainingRecipe fields (LMRecipe fields for NAS-PTB-v0)",
    )
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--train-images", type=int, default=None)
    g.add_argument("--resolution", type=int, default=None)
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: %(default)s)")
    g.add_argument("--data-dir", default=None, help="dataset folder (default: NAS_DATA_DIR, else download)")
    g.add_argument("--preset", default=None, choices=("v1", "v2", "v3"),
                   help="one of the paper's CNN spaces (Table 1; docs/presets.md): its depth, strides, pooling, the "
                   "end of --curriculum and, with --recipe auto on a GPU, its child recipe")
    g.add_argument("--layers", type=int, default=None, help="number of layers of the CNN space (default: 6)")
    g.add_argument("--predict-strides", action="store_true", help="the paper's variant that also predicts strides")
    g.add_argument("--curriculum", action="store_true", help="the paper's depth curriculum (6 layers, +2 every 1,600)")
    g.add_argument("--curriculum-every", type=int, default=1600)
    g.add_argument("--curriculum-step", type=int, default=2)
    g.add_argument("--curriculum-max-layers", type=int, default=None)
    g.add_argument("--cost", type=json_object, default=None,
                   help='params or FLOPs in the reward, any env: e.g. \'{"metric": "params", "limit": 1e6}\' (hard limit, '
                   'never trained above it) or \'{"metric": "flops", "target": 5e7, "w": -0.07}\' (MnasNet soft reward)')
    g.add_argument("--env-kwargs", type=json_object, default=None, help="extra gym.make kwargs as a JSON object")
    g.add_argument("--agent-kwargs", type=json_object, default=None, help="agent hyperparameters as a JSON object")

    from slurm.config import ExecutorConfig

    ExecutorConfig.add_arguments(p)
    p.set_defaults(func=_cmd_search)


def _recipe(args: argparse.Namespace) -> Any:
    """The child-training recipe of NAS-CIFAR10-v0 or NAS-PTB-v0 from --recipe and its overrides."""
    if args.env == "NAS-PTB-v0":
        from nas_env.ptb_evaluator import resolve_lm_recipe as resolve
    else:
        from nas_env.evaluators import resolve_recipe as resolve
    budget: Any = args.recipe
    if budget == "auto":
        import torch

        wants_gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
        if wants_gpu:
            from nas_env.spaces.cnn import cnn_preset

            budget = cnn_preset(args.preset).recipe if args.preset and args.env != "NAS-PTB-v0" else "paper"
        else:
            budget = "cpu-demo"
    elif budget.lstrip().startswith("{"):
        budget = json_object(budget)
    if any(v is not None for v in (args.epochs, args.train_images, args.resolution)):
        fields = resolve(budget).to_dict()
        for name in ("epochs", "train_images", "resolution"):
            if getattr(args, name) is not None:
                if name not in fields:
                    raise ValueError(f"--{name.replace('_', '-')} does not apply to {args.env}")
                fields[name] = getattr(args, name)
        budget = fields
    return budget


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if args.env in ("NAS-CIFAR10-v0", "NAS-PTB-v0"):
        kwargs.update(recipe=_recipe(args), device=args.device, seed=args.seed)
        if args.data_dir is not None:
            kwargs["data_dir"] = args.data_dir
    if args.preset is not None:
        if args.env not in ("NAS-CIFAR10-v0", "NAS-Synthetic-v0"):
            raise ValueError(f"--preset is a CNN space; {args.env} has none")
        if args.layers is not None or args.predict_strides:
            raise ValueError("--preset sets the layers and strides; drop --layers/--predict-strides")
        kwargs["preset"] = args.preset
    if args.cost is not None:
        kwargs["cost"] = args.cost
    if args.env in ("NAS-CIFAR10-v0", "NAS-Synthetic-v0"):
        if args.layers is not None:
            kwargs["num_layers"] = args.layers
        if args.predict_strides:
            kwargs["predict_strides"] = True
    kwargs.update(args.env_kwargs or {})
    return kwargs


def _executor(args: argparse.Namespace) -> dict[str, Any]:
    """Executor settings: the config file, then the flags; ``--parallel`` is ``--max-in-flight``, default 1; a
    table-lookup env without --executor or --executor-config runs its children inline."""
    from slurm.config import ExecutorConfig

    config = ExecutorConfig.from_args(args)
    if args.executor is None and args.executor_config is None and args.env in LOOKUP_ENVS:
        config = config.replace(executor="inline")
    if args.max_in_flight is None and (args.parallel is not None or args.executor_config is None):
        config = config.replace(max_in_flight=1 if args.parallel is None else args.parallel)
    return config.to_dict()


def _search_config(args: argparse.Namespace) -> Any:
    from agents.run_dir import SearchConfig

    curriculum = None
    if args.curriculum and args.preset is not None:
        from nas_env.spaces.cnn import cnn_preset

        curriculum = dict(cnn_preset(args.preset).curriculum)  # the preset's, ending at its depth
        if args.curriculum_max_layers is not None:
            curriculum["max_layers"] = args.curriculum_max_layers
    elif args.curriculum:
        curriculum = {
            "start_layers": args.layers or 6,
            "step_layers": args.curriculum_step,
            "every": args.curriculum_every,
            "max_layers": args.curriculum_max_layers,
        }
    return SearchConfig(
        env_id=args.env,
        env_kwargs=_env_kwargs(args),
        agent=args.agent,
        agent_kwargs=args.agent_kwargs or {},
        seed=args.seed,
        budget=6 if args.budget is None else args.budget,
        max_wall_time_s=args.wall_time,
        executor=_executor(args),
        curriculum=curriculum,
    )


def _resumed_config(args: argparse.Namespace) -> Any:
    """The stored config of ``--resume RUN_DIR`` with what the command line says explicitly: the limits
    replace the stored ones; an env, agent or seed that differs is refused by the one resume rule."""
    import dataclasses

    from agents.run_dir import RunDir

    stored = RunDir(args.resume).read_config()
    changes: dict[str, Any] = {}
    for flag, name in (("env", "env_id"), ("agent", "agent"), ("seed", "seed"), ("budget", "budget"),
                       ("wall_time", "max_wall_time_s")):  # fmt: skip
        if getattr(args, flag) is not None:
            changes[name] = getattr(args, flag)
    return dataclasses.replace(stored, **changes)


def _cmd_search(args: argparse.Namespace) -> int:
    import torch

    if args.resume is not None:
        run_dir, config = args.resume, _resumed_config(args)
    else:
        args.env = args.env or DEFAULT_ENV
        args.agent = args.agent or DEFAULT_AGENT
        args.seed = 0 if args.seed is None else args.seed
        config = _search_config(args)
        run_dir = args.run_dir or Path("runs") / f"{args.env}-{args.agent}-{time.strftime('%Y%m%d-%H%M%S')}"
    if config.executor["executor"] != "inline":
        # the driver only runs the controller (tiny tensors): one thread avoids stalls on a busy machine,
        # where two threads made each controller step an order of magnitude slower
        torch.set_num_threads(1)
    from agents.search import open_search

    search = open_search(run_dir, config, progress=not args.no_progress)  # every setup check, before any job
    report = None
    if args.report_every > 0:
        from evaluation.live import LiveReport

        report = LiveReport(run_dir, every=args.report_every)
        search.core.on_told_callbacks.append(report)
    try:
        _print_header(run_dir, search.config)
        summary = search.run()
    finally:
        search.close()
        if report is not None and report.write():  # the final page: it no longer reloads itself
            print(f"report: {Path(run_dir) / 'report' / 'index.html'}")
    config = search.config
    _print_summary(summary, config, args.top)
    return 0 if summary.finished else 3


def _print_header(run_dir: Path, config: Any) -> None:
    print(f"run directory: {run_dir}")
    print(f"env {config.env_id} {json.dumps(config.env_kwargs, sort_keys=True)}")
    print(f"agent {config.agent}, budget {config.budget} evaluations, executor {config.executor['executor']}"
          f" with {config.executor['max_in_flight']} in flight", flush=True)


def _print_summary(summary: Any, config: Any, top: int) -> None:
    from agents.core import make_env_parts

    space, _, _ = make_env_parts(config.env_id, config.env_kwargs)
    state = "finished" if summary.finished else f"stopped ({summary.in_flight} still in flight; --resume to go on)"
    clock = "virtual s" if summary.virtual_clock else "s"
    print(f"\n{summary.evaluations}/{summary.budget} evaluations, {state}, {summary.wall_time_s:.1f} {clock}")
    cpu = "-" if summary.driver_cpu_ms_per_child is None else f"{summary.driver_cpu_ms_per_child:.2f} ms"
    print(f"utilization {100 * summary.utilization:.1f}% of {summary.workers} workers, makespan "
          f"{summary.wall_time_s:.1f} {clock}, driver CPU {cpu} per finished child")
    perplexity = any(row.result.extra.get("metric_name") == "val_perplexity" for row in summary.best[:top])
    print(f"{'rank':>4}  {'reward':>8}  {'val ppl' if perplexity else 'val acc':>8}  {'status':<9} {'params':>9}  architecture")
    for rank, row in enumerate(summary.best[:top], 1):
        r = row.result
        metric = "-" if r.metric is None else (f"{r.metric:.1f}" if perplexity else f"{r.metric:.4f}")
        params = "-" if r.params is None else f"{r.params:,}"
        arch = space.architecture_from_json(row.arch_json)
        print(f"{rank:>4}  {r.reward:>8.4g}  {metric:>8}  {r.status.value:<9} {params:>9}  {arch}")
