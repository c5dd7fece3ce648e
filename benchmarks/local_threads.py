"""Local children with their share of the cores against torch's default of every core, in one process.

The same ``--children`` CIFAR-10 children (the ``cpu-demo`` recipe on the 6-layer space) run twice through the
``local`` executor, all in flight at once: first with each child's share (cores // children in flight, the
executor's rule), then with ``OMP_NUM_THREADS`` set to every core (torch's default, what each child had
before the rule). Printed: wall seconds of each batch, threads per child, and the ratio.

    NAS_DATA_DIR=... python benchmarks/local_threads.py --children 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nas_env.evaluators import TrainingEvaluator  # noqa: E402
from nas_env.spaces.cnn import CNNSpace  # noqa: E402
from slurm import Dispatcher, ExecutorConfig, Task  # noqa: E402
from slurm.local_backend import available_cores  # noqa: E402


def run_batch(tasks: list[Task], folder: Path) -> tuple[float, list[int]]:
    """Wall seconds for every task to finish, all in flight together, and the threads each child reported."""
    dispatcher = Dispatcher(
        ExecutorConfig(executor="local", poll_interval_s=0.2, time_limit_min=30, max_in_flight=len(tasks)), folder
    )
    start = time.monotonic()
    dispatcher.submit(tasks)
    results = {}
    while len(results) < len(tasks):
        for done in dispatcher.wait():
            results[done.key] = done.result
    wall = time.monotonic() - start
    bad = [f"{k}: {r.status.value} {r.error}" for k, r in results.items() if r.metric is None]
    if bad:
        raise SystemExit("a child failed: " + "; ".join(bad))
    return wall, [int(r.extra["torch_threads"]) for r in results.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=2, help="children in flight at once (default 2)")
    parser.add_argument("--recipe", default="cpu-demo", help="training recipe of each child (default cpu-demo)")
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)
    space = CNNSpace(6)
    evaluator = TrainingEvaluator(recipe=args.recipe, device="cpu", download=False)
    tasks = [Task(f"child{i}", evaluator, space.sample(np.random.default_rng([7, i]))) for i in range(args.children)]
    cores = available_cores()
    print(f"{args.children} {args.recipe} children in flight on {cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        shared, shared_threads = run_batch(tasks, Path(tmp) / "shared")
        os.environ["OMP_NUM_THREADS"] = str(cores)  # the children inherit it: torch's default, every core
        every, every_threads = run_batch(tasks, Path(tmp) / "every")
        os.environ.pop("OMP_NUM_THREADS")
    print(f"share of the cores (threads {shared_threads}): {shared:.1f} s")
    print(f"every core (threads {every_threads}): {every:.1f} s")
    print(f"ratio every core / share: {every / shared:.2f}x")


if __name__ == "__main__":
    main()
