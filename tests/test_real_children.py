"""Real children as dispatched jobs: the CIFAR-10 and Penn Treebank evaluators pickled into local
subprocesses and SLURM jobs, reading the real data there, checkpointing and resuming after a preemption;
a job that cannot see the data the driver saw; the README's first command on the real CIFAR-10 subset.

Same seed, same result: on a CPU a child's training is deterministic for a given number of torch threads,
but not across thread counts (float reductions split differently; a PTB child near the edge of stability
diverges with two threads and not with one). So the jobs here get ``OMP_NUM_THREADS=1`` and the inline
reference runs with one torch thread, and their results are compared exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.run_dir import RunDir
from nas_env.evaluators import TrainingEvaluator
from nas_env.ptb_evaluator import PTBEvaluator
from nas_env.results import EvalResult, Status
from nas_env.spaces import CNNSpace, RNNCellSpace
from nas_env.store import ResultStore
from slurm import Dispatcher, ExecutorConfig, Task, checkpoint_path
from local_slurm import collect_completed, simulate_preemption

CNN = CNNSpace(num_layers=3)
RNN = RNNCellSpace(num_leaves=2)


@pytest.fixture
def one_thread_jobs(monkeypatch: pytest.MonkeyPatch, one_torch_thread: None, data_root: Path) -> None:
    """Jobs started from now on train with one torch thread (as the inline references here do) and find
    the data through NAS_DATA_DIR, which they inherit (a SLURM job gets the submitting environment)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NAS_DATA_DIR", str(data_root))


def real_children(data_root: Path) -> list[Task]:
    """A 3-layer CIFAR-10 CNN (data found through NAS_DATA_DIR inside the job) and a 2-leaf PTB cell (data
    through an explicit data_dir), both on the "tiny" recipe."""
    cifar = TrainingEvaluator(recipe="tiny", device="cpu", seed=3)
    ptb = PTBEvaluator(recipe="tiny", device="cpu", seed=0, data_dir=data_root / "ptb")  # trains (seed 3 diverges)
    return [Task("cifar10", cifar, CNN.sample(0)), Task("ptb", ptb, RNN.sample(1))]


def assert_same_as_inline(task: Task, job: EvalResult) -> EvalResult:
    """The job's result is OK, in range, and exactly what evaluating the same child here gives."""
    assert job.status is Status.OK, job.error
    assert job.params and job.params > 0
    assert job.extra["device"] == "cpu" and job.extra["resumed_from_epoch"] == 0
    if isinstance(task.evaluator, PTBEvaluator):
        assert job.extra["metric_name"] == "val_perplexity"
        assert 1.0 < job.metric < 10_000  # a perplexity, far below the ~10k of a uniform guess after training
        assert job.reward == pytest.approx(80.0 / job.metric**2)
    else:
        assert 0.0 < job.metric <= 1.0 and job.flops and job.flops > 0
        assert job.reward == pytest.approx(job.metric**3)
    inline = task.evaluator.evaluate(task.arch)
    assert inline.status is Status.OK, inline.error
    for field in ("status", "metric", "reward", "curve", "params", "flops"):
        assert getattr(job, field) == getattr(inline, field), field
    return inline


def test_real_children_as_local_subprocesses(tmp_path: Path, data_root: Path, one_thread_jobs: None) -> None:
    tasks = real_children(data_root)
    dispatcher = Dispatcher(ExecutorConfig(executor="local", poll_interval_s=0.2, time_limit_min=10), tmp_path)
    dispatcher.check()
    ids = dispatcher.submit(tasks)
    done = collect_completed(dispatcher, len(tasks), timeout=300)
    for task, job_id in zip(tasks, ids):
        result = done[task.key].result
        assert done[task.key].job_id == result.job_id == job_id
        assert_same_as_inline(task, result)
        assert not checkpoint_path(dispatcher.folder, task.key).exists()  # removed once the child succeeded


def slurm_config(job_name: str) -> ExecutorConfig:
    return ExecutorConfig(executor="slurm", partition="debug", time_limit_min=5, poll_interval_s=0.5,
                          job_name=job_name)  # fmt: skip


def sacct_states(job_id: str) -> list[str]:
    """Every state SLURM recorded for ``job_id``, requeued runs included (``sacct -D``)."""
    out = subprocess.run(["sacct", "--parsable2", "--noheader", "-X", "-D", "-j", job_id, "-o", "State"],
                         capture_output=True, text=True, check=True, timeout=30).stdout  # fmt: skip
    return out.split()


@pytest.mark.slurm
def test_real_children_as_slurm_jobs(
    slurm_cluster: Path, tmp_path: Path, data_root: Path, one_thread_jobs: None
) -> None:
    tasks = real_children(data_root)
    dispatcher = Dispatcher(slurm_config("real-children"), tmp_path / "jobs")
    dispatcher.check()
    ids = dispatcher.submit(tasks)
    done = collect_completed(dispatcher, len(tasks), timeout=300)
    for task, job_id in zip(tasks, ids):
        result = done[task.key].result
        assert done[task.key].job_id == result.job_id == job_id
        assert_same_as_inline(task, result)


#: four epochs of 2,000 small images: a few seconds each on one CPU thread, long enough to preempt one
PREEMPTED_RECIPE = {"epochs": 4, "train_images": 2000, "val_images": 256, "resolution": 16, "batch_size": 64}


def wait_for_file(path: Path, job_id: str, timeout: float = 300.0) -> None:
    """Until ``path`` exists (written atomically by the job); fail at once if the job left the queue."""
    deadline = time.monotonic() + timeout  # a bound on a hang, not an expected duration
    while not path.exists():
        states = sacct_states(job_id)
        assert not states or states[-1] in ("PENDING", "RUNNING"), f"job {job_id} ended ({states}) before {path.name}"
        assert time.monotonic() < deadline, f"job {job_id} never wrote {path.name}"
        time.sleep(0.05)


@pytest.mark.slurm
def test_a_preempted_real_child_resumes_from_its_epoch_checkpoint(
    slurm_cluster: Path, tmp_path: Path, data_root: Path, one_thread_jobs: None
) -> None:
    evaluator = TrainingEvaluator(recipe=PREEMPTED_RECIPE, device="cpu", seed=1)
    arch = CNN.sample(5)
    dispatcher = Dispatcher(slurm_config("real-preempted"), tmp_path / "jobs")
    dispatcher.check()
    (job_id,) = dispatcher.submit([Task("victim", evaluator, arch)])
    checkpoint = checkpoint_path(dispatcher.folder, "victim")
    wait_for_file(checkpoint, job_id)  # the first epoch's checkpoint: one epoch done, three to go
    simulate_preemption(job_id)  # SIGTERM + USR2, as a preemption with requeue sends them
    result = collect_completed(dispatcher, 1, timeout=300)["victim"].result

    assert result.status is Status.OK, result.error
    assert result.extra["resumed_from_epoch"] >= 1, result.extra
    assert result.extra["epochs_done"] == len(result.curve) == 4
    assert all(0.0 < a <= 1.0 for a in result.curve) and result.metric == max(result.curve)
    assert "REQUEUED" in sacct_states(job_id)
    # resuming is exact: the preempted child ends where an uninterrupted run of it ends
    inline = evaluator.evaluate(arch)
    assert result.curve == inline.curve and result.metric == inline.metric and result.params == inline.params
