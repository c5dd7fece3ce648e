"""The paper's scale on a virtual clock: 12,800 children with P workers, asynchronous against synchronous.

Every run is a real search (the search core, the agent, the sqlite store, the dispatcher) on NAS-Bench-201
with the ``simulated`` executor: each child occupies a worker for the table's training time, and the clock
jumps to the next completion. Asynchronous: a worker that frees up gets the next architecture at once (the
paper's replicas). Synchronous: a batch of P waits for its slowest child before the next batch is asked for.

For each (agent, P, mode) it prints the workers' utilization, the virtual makespan, the driver's CPU per
finished child, the store's size, the wall time the driver spent, and its peak memory; then the async/sync
ratios. Each run is its own process (peak memory is per process).

    python benchmarks/scale.py                                   # 12,800 children, P = 100, 400, 800
    python benchmarks/scale.py --budget 3200 --workers 800 --agents reinforce
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_one(agent: str, workers: int, budget: int, synchronous: bool, seed: int, folder: str) -> dict[str, Any]:
    """One search in a fresh run directory; its summary figures."""
    sys.path.insert(0, str(REPO_ROOT))
    import torch

    torch.set_num_threads(1)  # as `nas search` sets it for a driver
    from agents.run_dir import SearchConfig
    from agents.search import Search

    class SynchronousSearch(Search):
        """Asks for the next batch only when the whole previous batch is back."""

        def run(self) -> Any:
            core = self.core
            while not core.done():
                if core.num_waiting() == 0 and core.room() > 0:
                    self._fill()
                if core.num_waiting():
                    core.collect()
                elif core.out_of_time():
                    break
            return self.summary()

    run_dir = Path(folder) / f"{agent}-P{workers}-{'sync' if synchronous else 'async'}"
    config = SearchConfig(env_id="NAS-Bench-201-v0", agent=agent, seed=seed, budget=budget,
                          executor={"executor": "simulated", "max_in_flight": workers})  # fmt: skip
    start = time.perf_counter()
    search = (SynchronousSearch if synchronous else Search)(run_dir, config)
    try:
        summary = search.run()
    finally:
        search.close()
    wall = time.perf_counter() - start
    store = run_dir / "store.sqlite"
    return {
        "agent": agent,
        "workers": workers,
        "mode": "sync" if synchronous else "async",
        "evaluations": summary.evaluations,
        "utilization": summary.utilization,
        "makespan_h": summary.wall_time_s / 3600,
        "driver_cpu_ms": summary.driver_cpu_ms_per_child,
        "driver_wall_s": wall,
        "store_mb": (store.stat().st_size + sum(p.stat().st_size for p in run_dir.glob("store.sqlite-*"))) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "best_reward": summary.best[0].result.reward if summary.best else float("nan"),
    }


def _in_process(args: tuple[Any, ...]) -> dict[str, Any]:
    return run_one(*args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, default=12_800, help="children per run (the paper: 12,800)")
    p.add_argument("--workers", type=int, nargs="+", default=[100, 400, 800], help="P values")
    p.add_argument("--agents", nargs="+", default=["reinforce", "random", "evolution"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        ctx = multiprocessing.get_context("spawn")
        for agent in args.agents:
            for workers in args.workers:
                for synchronous in (False, True):
                    with ctx.Pool(1) as pool:  # a fresh process per run: its own peak memory
                        row = pool.apply(_in_process, ((agent, workers, args.budget, synchronous, args.seed, folder),))
                    rows.append(row)
                    print(f"{agent:>10} P={workers:<4} {row['mode']:>5}: utilization {100 * row['utilization']:5.1f}%  "
                          f"makespan {row['makespan_h']:7.1f} h  driver CPU {row['driver_cpu_ms']:5.2f} ms/child  "
                          f"wall {row['driver_wall_s']:6.1f} s  store {row['store_mb']:5.1f} MB  "
                          f"peak {row['peak_rss_mb']:6.0f} MB  best {row['best_reward']:.4f}", flush=True)
    print("\nasync / sync ratios (makespan: < 1 is faster; utilization: > 1 is busier)")
    for agent in args.agents:
        for workers in args.workers:
            a, s = (next(r for r in rows if r["agent"] == agent and r["workers"] == workers and r["mode"] == m)
                    for m in ("async", "sync"))  # fmt: skip
            print(f"{agent:>10} P={workers:<4} makespan {a['makespan_h'] / s['makespan_h']:.3f}  "
                  f"utilization {a['utilization'] / s['utilization']:.3f}  "
                  f"driver CPU {a['driver_cpu_ms'] / s['driver_cpu_ms']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
