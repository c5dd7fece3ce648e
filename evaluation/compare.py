"""Run several agents on the same environment, budget and seeds, and write a side-by-side report.

Every (agent, seed) pair is one ordinary search (:class:`agents.search.Search`, or
:func:`agents.sb3.run_sb3_search` for the Stable-Baselines3 agents) in ``OUT/runs/<label>-seed<seed>``,
so each run can be inspected, resumed or reported on (``nas report``) like any other. Runs are spread
over ``workers`` processes. Running the same comparison again into the same folder resumes it: finished
runs return at once, so only missing runs are computed and the report is rebuilt from the stores.

The report (:mod:`evaluation.report`) is computed from the run directories alone, never from the
in-memory searches: what a table says is always what the stores hold.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from agents.registry import ASK_TELL_AGENTS, SB3_AGENTS, SB3_CONTRIB_AGENTS
from agents.run_dir import SearchConfig
from agents.search import run_search
from evaluation.compare_spec import (  # noqa: F401 - part of this module's API, re-exported
    DEFAULT_EXECUTOR,
    SPEC_FILE,
    TIMINGS_FILE,
    AgentSpec,
    CompareError,
    CompareSpec,
    read_spec,
    read_timings,
    run_name,
    runs_dir,
    write_spec,
)


# ---------------------------------------------------------------------------------------------- agents
def sb3_available(agent: str | None = None) -> bool:
    """Whether the packages an SB3 agent needs are installed: stable_baselines3 for every one, and sb3_contrib
    too for ``maskable-ppo`` and ``recurrent-ppo`` (``agent=None``: stable_baselines3 alone)."""
    packages = ["stable_baselines3"] + (["sb3_contrib"] if agent in SB3_CONTRIB_AGENTS else [])
    return all(importlib.util.find_spec(p) is not None for p in packages)


def known_agents() -> list[str]:
    """Agent names a comparison accepts now: the ask/tell ones, plus each SB3 one whose packages are installed."""
    return sorted(ASK_TELL_AGENTS) + [a for a in SB3_AGENTS if sb3_available(a)]


def parse_agents(agents: str | Sequence[str], agent_kwargs: Mapping[str, Mapping[str, Any]] | None = None) -> list[AgentSpec]:
    """``"reinforce,random,rea:evolution"`` -> specs. An item is ``AGENT`` (labelled by its name) or
    ``LABEL:AGENT``; ``agent_kwargs`` maps a *label* to that competitor's hyperparameters (a competitor
    without an entry gets the agent's defaults: ``reinforce-paper:reinforce`` never inherits the kwargs
    given for ``reinforce``).

    Raises :class:`CompareError` for an unknown agent, a repeated label, or kwargs naming no label.
    """
    items = [a.strip() for a in (agents.split(",") if isinstance(agents, str) else agents) if a.strip()]
    if not items:
        raise CompareError("no agents given")
    known = known_agents()
    agent_kwargs = dict(agent_kwargs or {})
    specs: list[AgentSpec] = []
    for item in items:
        label, _, name = item.rpartition(":")
        label = label or name
        if name not in known:
            hint = "" if name not in SB3_AGENTS else " (the SB3 agents need the sb3 extra: pip install 'nas-rl[sb3]')"
            raise CompareError(f"unknown agent {name!r}{hint}; known agents: {', '.join(known)}")
        if any(s.label == label for s in specs):
            raise CompareError(f"agent label {label!r} given twice; use LABEL:AGENT to tell them apart")
        specs.append(AgentSpec(label, name, dict(agent_kwargs.get(label, {}))))
    unused = sorted(set(agent_kwargs) - {s.label for s in specs})
    if unused:
        raise CompareError(f"--agent-kwargs for {unused}, which is not a label of --agents {[s.label for s in specs]}")
    return specs


# ---------------------------------------------------------------------------------------------- running
@dataclasses.dataclass(frozen=True)
class RunTask:
    """One (agent, seed) search to run in a worker."""

    label: str
    seed: int
    run_dir: str
    config: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What a worker reports back (the numbers of the report come from the store, not from here)."""

    label: str
    seed: int
    wall_s: float
    evaluations: int = 0
    best_reward: float | None = None
    error: str | None = None


def execute_run(task: RunTask) -> RunOutcome:
    """Run (or resume) one search to the end; an exception becomes an outcome with ``error`` set."""
    start = time.perf_counter()
    try:
        config = SearchConfig.from_dict(task.config)
        summary = run_search(Path(task.run_dir), config)
        best = summary.best[0].result.reward if summary.best else None
        return RunOutcome(task.label, task.seed, time.perf_counter() - start, summary.evaluations, best)
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        return RunOutcome(task.label, task.seed, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")


def _init_worker() -> None:
    """One intra-op thread per worker: the controller's tiny LSTM gets ~10x slower when 2 threads fight
    over 2 busy cores (measured: 1.1 ms vs 12 ms per LSTM call), and workers already fill the cores."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def plan_tasks(out_dir: Path, spec: CompareSpec) -> list[RunTask]:
    """Every (agent, seed) run, seed-major so that slow and fast agents interleave across workers."""
    return [
        RunTask(a.label, seed, str(runs_dir(out_dir) / run_name(a.label, seed)), spec.run_config(a, seed).to_dict())
        for seed in spec.seeds
        for a in spec.agents
    ]


def run_tasks(
    tasks: Sequence[RunTask], workers: int, log: Callable[[str], None] | None = None
) -> list[RunOutcome]:
    """Run ``tasks`` in ``workers`` processes (in this process when ``workers == 1``), in task order."""
    outcomes: dict[int, RunOutcome] = {}

    def done(i: int, outcome: RunOutcome) -> None:
        outcomes[i] = outcome
        if log is not None:
            state = f"FAILED: {outcome.error}" if outcome.error else (
                f"{outcome.evaluations} evaluations, best reward {outcome.best_reward:.4f}"
                if outcome.best_reward is not None else f"{outcome.evaluations} evaluations"
            )
            log(f"[{len(outcomes)}/{len(tasks)}] {outcome.label} seed {outcome.seed}: {state} ({outcome.wall_s:.1f} s)")

    if workers <= 1 or len(tasks) <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i, task in enumerate(tasks):
                done(i, execute_run(task))
        finally:
            torch.set_num_threads(threads)
    else:
        context = multiprocessing.get_context("spawn")  # no fork after torch has started threads
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            futures = {pool.submit(execute_run, task): i for i, task in enumerate(tasks)}
            for future in cf.as_completed(futures):
                done(futures[future], future.result())
    return [outcomes[i] for i in range(len(tasks))]


def run_compare(
    out_dir: str | Path,
    spec: CompareSpec,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
    rank: str = "given",
) -> "Any":
    """Run every (agent, seed) search of ``spec`` into ``out_dir/runs`` and write the report into
    ``out_dir``; returns the :class:`evaluation.report.CompareReport`. Raises :class:`CompareError` after
    writing what it can if some runs failed. ``rank``: the agents' order in the report ("given" or "pareto")."""
    from evaluation.report import write_compare_report

    out = Path(out_dir)
    write_spec(out, spec)
    tasks = plan_tasks(out, spec)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    start = time.perf_counter()
    outcomes = run_tasks(tasks, workers, log)
    total = time.perf_counter() - start
    _write_timings(out, outcomes, total, workers)
    failed = [o for o in outcomes if o.error]
    if failed:
        lines = "\n".join(f"  {run_name(o.label, o.seed)}: {o.error}" for o in failed)
        raise CompareError(f"{len(failed)} of {len(outcomes)} runs failed:\n{lines}")
    return write_compare_report(out, rank=rank)


def _write_timings(out: Path, outcomes: Sequence[RunOutcome], total_s: float, workers: int) -> None:
    """Wall times (not reproducible, so kept apart from the report's tables). Every call of
    :func:`run_compare` on the folder appends one session: resuming a finished comparison (seconds)
    does not hide what the first session cost."""
    sessions = read_timings(out)
    sessions.append({
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - total_s)),
        "total_wall_s": round(total_s, 3),
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "runs": {run_name(o.label, o.seed): round(o.wall_s, 4) for o in outcomes},
    })
    (out / TIMINGS_FILE).write_text(json.dumps({"sessions": sessions}, indent=2, sort_keys=True) + "\n")
