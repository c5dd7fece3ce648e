"""The worker pool (``--pool N``) and several children per worker (``--children-per-gpu k``).

Real worker processes (submitit local jobs, and SLURM jobs on the session's one-node cluster) pull
SyntheticEvaluator children from the run directory. A worker is killed with SIGKILL in the middle of a
task: the task must finish on another worker from its epoch checkpoint, no child may be trained twice
(the evaluator's ``log_path`` counts trainings), and the pool's jobs must end once the search is over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_slurm import collect_completed, distinct_architectures
from nas_env.errors import DeviceError
from nas_env.evaluators import SyntheticEvaluator
from nas_env.gpu_share import child_memory_fraction
from nas_env.results import Status
from nas_env.spaces.cnn import CNNSpace
from slurm import Dispatcher, ExecutorConfig, Task, checkpoint_path
from slurm.claims import SETTLED, read_claim
from slurm.job import claim_path
from slurm.local_backend import controller_alive
from slurm.pool_worker import PoolPaths

SPACE = CNNSpace(num_layers=3)
GIB = 1024**3


def log_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(predicate, what: str, timeout: float = 120.0) -> None:
    """Wait for an event (``timeout`` bounds a hang; it is not the expected time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.05)


def kill_worker_mid_task(dispatcher: Dispatcher, folder: Path, keys: list[str]) -> tuple[str, str]:
    """SIGKILL the worker that owns the first task to pass its first epoch; (task key, worker id)."""
    found: list[tuple[str, dict]] = []

    def mid_task() -> bool:
        for key in keys:
            claim = read_claim(claim_path(folder, key))
            if claim and SETTLED not in claim and checkpoint_path(folder, key).exists():
                found.append((key, claim))
                return True
        return False

    wait_for(mid_task, "a task reaching its first epoch checkpoint")
    key, claim = found[0]
    worker = json.loads(PoolPaths(folder / "pool").worker_file(claim["worker"]).read_text())
    os.kill(int(worker["pid"]), signal.SIGKILL)
    return key, claim["worker"]


def check_killed_task_finished_elsewhere(folder: Path, log: Path, keys: list[str], killed: tuple[str, str]) -> None:
    lines = log_lines(log)
    assert sorted(line["key"] for line in lines) == sorted(keys)  # every child trained, none twice
    key, worker = killed
    (line,) = [line for line in lines if line["key"] == key]
    assert line["resumed_from_epoch"] >= 1  # resumed from the dead worker's checkpoint
    claim = read_claim(claim_path(folder, key))
    assert claim is not None and claim[SETTLED] == "ok" and claim["worker"] != worker


def test_pool_worker_killed_mid_task_finishes_elsewhere_once_and_the_pool_ends(tmp_path: Path) -> None:
    folder, log = tmp_path / "jobs", tmp_path / "trainings.jsonl"
    evaluator = SyntheticEvaluator(SPACE, epochs=3, seconds_per_epoch=0.4, log_path=log)
    archs = distinct_architectures(SPACE, 6)
    keys = [SPACE.key(a) for a in archs]
    config = ExecutorConfig(executor="local", pool=2, max_in_flight=6, poll_interval_s=0.2)
    dispatcher = Dispatcher(config, folder)
    dispatcher.submit([Task(key, evaluator, arch) for key, arch in zip(keys, archs)])
    killed = kill_worker_mid_task(dispatcher, folder, keys)
    done = collect_completed(dispatcher, len(keys), timeout=120)
    assert all(c.result.status is Status.OK for c in done.values())
    assert all(done[k].result.reward == evaluator.score(SPACE.encode(a)) for k, a in zip(keys, archs))
    check_killed_task_finished_elsewhere(folder, log, keys, killed)
    dispatcher.close()  # the search is over: the workers end
    pids = [int(p.name.split("_")[0]) for p in (folder / "pool" / "local").rglob("*_submitted.pkl")]
    assert len(pids) >= 3  # two workers, and one started in place of the killed one
    wait_for(lambda: not any(controller_alive(pid) for pid in pids), "the end of every pool worker")
    assert not list(PoolPaths(folder / "pool").tasks.iterdir())  # every collected task was removed


def test_pool_workers_end_by_themselves_when_the_driver_is_gone(tmp_path: Path) -> None:
    """No ``done`` marker (the driver died without closing): the workers exit once the driver's heartbeat is
    older than ``pool_idle_timeout_s``."""
    folder = tmp_path / "jobs"
    config = ExecutorConfig(executor="local", pool=2, poll_interval_s=0.2, pool_idle_timeout_s=1.0)
    dispatcher = Dispatcher(config, folder)
    archs = distinct_architectures(SPACE, 2)
    dispatcher.submit([Task(SPACE.key(a), SyntheticEvaluator(SPACE), a) for a in archs])
    collect_completed(dispatcher, 2, timeout=120)  # the driver stops here: no close, no more heartbeats
    pids = [int(p.name.split("_")[0]) for p in (folder / "pool" / "local").rglob("*_submitted.pkl")]
    assert len(pids) == 2
    wait_for(lambda: not any(controller_alive(pid) for pid in pids), "the end of the idle pool workers")
    assert not PoolPaths(folder / "pool").done.exists()


def test_children_per_gpu_runs_k_children_at_once_each_result_once(tmp_path: Path) -> None:
    """On CPU, ``children_per_gpu`` k runs k children at once in the local slot; never more."""
    folder, log = tmp_path / "jobs", tmp_path / "trainings.jsonl"
    evaluator = SyntheticEvaluator(SPACE, epochs=1, seconds_per_epoch=1.5, log_path=log)
    archs = distinct_architectures(SPACE, 4)
    keys = [SPACE.key(a) for a in archs]
    dispatcher = Dispatcher(ExecutorConfig(executor="local", children_per_gpu=2, poll_interval_s=0.2), folder)
    dispatcher.submit([Task(key, evaluator, arch) for key, arch in zip(keys, archs)])
    done = collect_completed(dispatcher, len(keys), timeout=120)  # fails if a result arrives twice
    dispatcher.close()
    assert sorted(done) == sorted(keys) and all(c.result.ok for c in done.values())
    lines = log_lines(log)
    assert sorted(line["key"] for line in lines) == sorted(keys)
    # at the start of each child, how many children were running (itself included)
    running = [sum(o["started"] <= line["started"] < o["ended"] for o in lines) for line in lines]
    assert max(running) == 2, running


def test_pool_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="pool must be >= 0"):
        ExecutorConfig(pool=-1)
    with pytest.raises(ValueError, match="children_per_gpu must be >= 1"):
        ExecutorConfig(children_per_gpu=0)
    with pytest.raises(ValueError, match="need the local or slurm executor, not 'inline'"):
        ExecutorConfig(executor="inline", pool=2)
    with pytest.raises(ValueError, match="pool_idle_timeout_s must be > 0"):
        ExecutorConfig(pool=2, pool_idle_timeout_s=0)
    done = subprocess.run(
        [sys.executable, "-m", "nas_cli", "search", "--env", "NAS-Synthetic-v0", "--executor", "simulated",
         "--children-per-gpu", "2", "--budget", "1", "--run-dir", "unused"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "need the local or slurm executor" in done.stderr


def test_gpu_share_per_child_and_the_one_line_error_when_k_children_do_not_fit() -> None:
    assert child_memory_fraction(4, free_bytes=80 * GIB, total_bytes=80 * GIB) == pytest.approx(0.25)
    assert child_memory_fraction(2, free_bytes=40 * GIB, total_bytes=80 * GIB) == pytest.approx(0.25)
    with pytest.raises(DeviceError) as error:
        child_memory_fraction(8, free_bytes=5 * GIB, total_bytes=16 * GIB, device="cuda:0")
    message = str(error.value)
    assert "\n" not in message and "cuda:0 has 5.0 GiB free" in message
    assert "use --children-per-gpu 5 or fewer" in message


@pytest.mark.slurm
def test_slurm_pool_worker_killed_mid_task_finishes_elsewhere_once_and_the_pool_ends(
    slurm_cluster: Path, tmp_path: Path
) -> None:
    folder, log = tmp_path / "jobs", tmp_path / "trainings.jsonl"
    evaluator = SyntheticEvaluator(SPACE, epochs=3, seconds_per_epoch=0.4, log_path=log)
    archs = distinct_architectures(SPACE, 6, offset=100)
    keys = [SPACE.key(a) for a in archs]
    config = ExecutorConfig(executor="slurm", partition="debug", time_limit_min=5, pool=2, max_in_flight=6,
                            poll_interval_s=0.5, job_name="pool-kill")  # fmt: skip
    dispatcher = Dispatcher(config, folder)
    dispatcher.check()
    dispatcher.submit([Task(key, evaluator, arch) for key, arch in zip(keys, archs)])
    killed = kill_worker_mid_task(dispatcher, folder, keys)
    done = collect_completed(dispatcher, len(keys), timeout=240)
    assert all(c.result.status is Status.OK for c in done.values())
    check_killed_task_finished_elsewhere(folder, log, keys, killed)
    assert dispatcher.scheduler_submissions <= 3  # the pool, and one replacement: not a job per child
    dispatcher.close()

    def pool_jobs_ended() -> bool:
        out = subprocess.run(["squeue", "-h", "-n", "pool-kill", "-o", "%i"], capture_output=True, text=True,
                             timeout=30, check=True).stdout  # fmt: skip
        return not out.split()

    wait_for(pool_jobs_ended, "the end of every pool job in SLURM")
