"""A worker pool (``--pool N``) against one job per child, on the real one-node SLURM (or the local executor).

For each child kind (the Synthetic evaluator sleeping ``--seconds`` per child; a ``tiny`` CIFAR-10 child)
the same ``--children`` are run twice in this process, ``--in-flight`` at a time as the search core keeps
them (a new submission as each result arrives): once as one job per child, once through a pool of
``--pool`` workers. Printed per mode: children per minute, scheduler calls (sacct status queries and
sbatch submissions) and the pool's ratio over one job per child.

    python benchmarks/pool.py --kind synthetic --seconds 1 --children 200      # starts its own SLURM
    python benchmarks/pool.py --kind cifar --children 40
    python benchmarks/pool.py --executor local --kind synthetic --seconds 0 --children 50
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # local_slurm: the tests' cluster

from nas_env.evaluators import Evaluator, SyntheticEvaluator, TrainingEvaluator  # noqa: E402
from nas_env.spaces.cnn import CNNSpace  # noqa: E402
from slurm import Dispatcher, ExecutorConfig, Task  # noqa: E402


def children(kind: str, n: int, seconds: float, data_dir: str | None) -> tuple[Evaluator, list[Any], Any]:
    """The evaluator, ``n`` distinct architectures and the space of one benchmark kind."""
    from local_slurm import distinct_architectures

    if kind == "synthetic":
        space = CNNSpace(num_layers=3)
        evaluator: Evaluator = SyntheticEvaluator(space, epochs=1, seconds_per_epoch=seconds)
    else:
        space = CNNSpace(num_layers=2)
        evaluator = TrainingEvaluator(recipe="tiny", data_dir=data_dir, device="cpu", download=False)
    return evaluator, distinct_architectures(space, n), space


def run(config: ExecutorConfig, folder: Path, evaluator: Evaluator, archs: list[Any], space: Any) -> dict[str, float]:
    """Run every child, ``config.max_in_flight`` at a time, refilling as results arrive; the figures."""
    dispatcher = Dispatcher(config, folder)
    dispatcher.check()
    queue = [Task(space.key(a), evaluator, a) for a in archs]
    done, failed = 0, 0
    start = time.monotonic()
    while done < len(archs):
        room = min(dispatcher.capacity(), len(queue))
        if room:
            dispatcher.submit(queue[:room])
            queue = queue[room:]
        for completed in dispatcher.wait(timeout=60):
            done += 1
            failed += not completed.result.ok
    elapsed = time.monotonic() - start
    figures = {
        "children": len(archs),
        "failed": failed,
        "seconds": elapsed,
        "per_minute": 60.0 * len(archs) / elapsed,
        "status_queries": dispatcher.scheduler_calls,
        "submissions": dispatcher.scheduler_submissions,
    }
    dispatcher.close()
    return figures


@contextlib.contextmanager
def cluster(executor: str) -> Iterator[None]:
    """A one-node SLURM for the benchmark (the tests' cluster), unless one is configured already."""
    if executor != "slurm" or os.environ.get("SLURM_CONF"):
        yield
        return
    from local_slurm import local_cluster

    with tempfile.TemporaryDirectory(prefix="nas-bench-slurm-") as folder, local_cluster(folder):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm")
    parser.add_argument("--kind", choices=["synthetic", "cifar"], default="synthetic")
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0, help="training time of a synthetic child")
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--poll-interval-s", type=float, default=0.5)
    parser.add_argument("--slots", type=int, default=None,
                        help="children that can run at once (default: in flight, at most the CPUs: the one-node "
                             "cluster has one job slot per CPU)")
    parser.add_argument("--modes", default="per-child,pool", help="which modes to run, in order")
    args = parser.parse_args()
    args.slots = args.slots or min(args.in_flight, os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the children: one thread each, as many as the cores
    evaluator, archs, space = children(args.kind, args.children, args.seconds, os.environ.get("NAS_DATA_DIR"))
    base = {"executor": args.executor, "max_in_flight": args.in_flight, "poll_interval_s": args.poll_interval_s,
            "time_limit_min": 60, "job_name": "bench-pool"}  # fmt: skip
    if args.executor == "slurm":
        base["partition"] = "debug"
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="nas-bench-pool-") as tmp:
        with cluster(args.executor):
            for mode in args.modes.split(","):
                config = ExecutorConfig(**base, pool=args.pool if mode == "pool" else 0)
                results[mode] = run(config, Path(tmp) / mode, evaluator, archs, space)
                r = results[mode]
                print(f"{mode:>9}: {r['children']:.0f} children ({r['failed']:.0f} failed) in {r['seconds']:.1f} s = "
                      f"{r['per_minute']:.1f} per minute; {r['status_queries']:.0f} status queries, "
                      f"{r['submissions']:.0f} submissions", flush=True)  # fmt: skip
    if {"pool", "per-child"} <= results.keys():
        pool, single = results["pool"], results["per-child"]
        print(f"pool / per-child: children per minute x{pool['per_minute'] / single['per_minute']:.2f}, "
              f"submissions x{pool['submissions'] / single['submissions']:.3f}, "
              f"status queries x{pool['status_queries'] / max(1, single['status_queries']):.2f}")
        training = args.seconds if args.kind == "synthetic" else 0.0
        for mode, r in (("per-child", single), ("pool", pool)):
            slot = r["seconds"] * args.slots / r["children"]
            print(f"{mode}: {slot:.2f} s of a slot per child, {slot - training:.2f} s beyond the training "
                  f"(wall time x {args.slots} slots / children{' - training' if training else ''})")


if __name__ == "__main__":
    main()
