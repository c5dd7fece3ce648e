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
from slurm.local_backend import available_cores
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
    assert job.extra["torch_threads"] == 1  # OMP_NUM_THREADS=1 in the job's environment wins over its share
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


def submit_and_check_against_inline(dispatcher: Dispatcher, tasks: list) -> list:
    """Submit ``tasks`` as one batch, collect them, and check each job's result against an inline evaluation."""
    ids = dispatcher.submit(tasks)
    done = collect_completed(dispatcher, len(tasks), timeout=300)
    for task, job_id in zip(tasks, ids):
        result = done[task.key].result
        assert done[task.key].job_id == result.job_id == job_id
        assert_same_as_inline(task, result)
    return tasks


def test_real_children_as_local_subprocesses(tmp_path: Path, data_root: Path, one_thread_jobs: None) -> None:
    tasks = real_children(data_root)
    dispatcher = Dispatcher(ExecutorConfig(executor="local", poll_interval_s=0.2, time_limit_min=10), tmp_path)
    dispatcher.check()
    for task in submit_and_check_against_inline(dispatcher, tasks):
        assert not checkpoint_path(dispatcher.folder, task.key).exists()  # removed once the child succeeded


@pytest.mark.parametrize("in_flight", [1, 2])
def test_local_children_share_the_cores(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch, in_flight: int
) -> None:
    """With no OMP_NUM_THREADS set, each local child gets the machine's cores divided by the children in flight
    (at least one), so children started together do not oversubscribe the machine."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("NAS_DATA_DIR", str(data_root))
    evaluator = TrainingEvaluator(recipe="tiny", device="cpu", seed=3)
    tasks = [Task(f"child{i}", evaluator, CNN.sample(i)) for i in range(in_flight)]
    dispatcher = Dispatcher(ExecutorConfig(executor="local", poll_interval_s=0.2, time_limit_min=10,
                                           max_in_flight=in_flight), tmp_path)  # fmt: skip
    dispatcher.submit(tasks)
    done = collect_completed(dispatcher, len(tasks), timeout=300)
    for task in tasks:
        result = done[task.key].result
        assert result.status is Status.OK, result.error
        assert result.extra["torch_threads"] == max(1, available_cores() // in_flight)


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
    submit_and_check_against_inline(dispatcher, tasks)


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


def test_a_job_that_cannot_see_the_data_stops_the_search_with_one_line(
    tmp_path: Path, data_root: Path, one_torch_thread: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The driver's prepare() reads the data, then the data folder disappears before the child's job starts
    (as on a node without the driver's mount): the job raises DatasetNotFoundError, the search stops with
    one error line and exit status 2, nothing is told. A resume whose fresh job meets the same problem
    stops the same way; once the data is back, a resume finishes the run."""
    from nas_cli.main import main
    from slurm.dispatch import Dispatcher as RealDispatcher

    data, real_data = tmp_path / "mounted", data_root / "cifar10-subset"
    submit = RealDispatcher.submit

    def unmount_then_submit(self: RealDispatcher, tasks: list) -> list[str]:
        if data.is_symlink():
            data.unlink()  # after the driver's checks, before any job: only the job misses the data
        return submit(self, tasks)

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir = tmp_path / "run"
    args = ["search", "--no-progress", "--env", "NAS-CIFAR10-v0", "--agent", "random", "--budget", "1",
            "--recipe", "tiny", "--layers", "2", "--device", "cpu", "--data-dir", str(data),
            "--executor", "local", "--run-dir", str(run_dir)]  # fmt: skip
    resume = ["search", "--resume", str(run_dir), "--no-progress"]
    job_ids = []
    with monkeypatch.context() as unmounting:
        unmounting.setattr(RealDispatcher, "submit", unmount_then_submit)
        for command in (args, resume):  # a new run, then a resume whose fresh job misses the data too
            data.symlink_to(real_data, target_is_directory=True)  # there for the driver's checks
            assert main(command) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1, err
            assert err[0].startswith("nas search: error: a child could not start on its worker (job ")
            assert f"CIFAR-10 not found. Searched: {data}" in err[0]
            assert err[0].endswith("the search stopped, fix the setup and run --resume")
            job_ids.append(err[0].split("(job ")[1].split(")")[0])
            with ResultStore(RunDir(run_dir).store_path) as store:
                assert store.num_told() == 0 and store.count() == 0  # no budget spent, no failure recorded
                (waiting,) = store.in_flight()
    assert job_ids[0] != job_ids[1]  # the resume gave the child a fresh job, not the old job's old result

    data.symlink_to(real_data, target_is_directory=True)  # the data is back: the resume trains the child
    assert main(resume) == 0, capsys.readouterr().err
    assert "1/1 evaluations, finished" in capsys.readouterr().out
    with ResultStore(RunDir(run_dir).store_path) as store:
        (told,) = store.told()
        assert told.proposal_id == waiting.proposal_id and told.status == "ok"
        (evaluation,) = store.evaluations()
        assert evaluation.result.ok and evaluation.result.job_id not in job_ids


@pytest.mark.slow
@pytest.mark.minutes
@pytest.mark.timeout(1300)  # the subprocess's 1200 s bounds it; 6 trainings of minutes each on an AVX2-only CPU
def test_the_readme_first_command_on_the_real_cifar10_subset(tmp_path: Path, data_root: Path) -> None:
    """README.md's ``nas search``, as it runs with no options (NAS-CIFAR10-v0, reinforce, budget 6, recipe
    auto = cpu-demo on a CPU, local executor, one child in flight), on the real subset through NAS_DATA_DIR."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "pip install -e . && nas search\n" in readme  # the command this test runs (without the install)
    run_dir = tmp_path / "run"
    env = {**os.environ, "NAS_DATA_DIR": str(data_root)}
    env.pop("NAS_CACHE_DIR", None)  # as a user's shell has it; torch threads: the suite's share of the cores
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nas_cli", "search", "--no-progress", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)  # fmt: skip
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert "env NAS-CIFAR10-v0 " in done.stdout and '"recipe": "cpu-demo"' in done.stdout
    assert "agent reinforce, budget 6 evaluations, executor local with 1 in flight" in done.stdout
    assert "6/6 evaluations, finished" in done.stdout
    with ResultStore(RunDir(run_dir).store_path) as store:
        results = [e.result for e in store.evaluations()]
        told = store.told()
    assert len(told) == 6 and all(r.status == "ok" for r in told)
    assert results and all(r.status is Status.OK for r in results)
    assert all(r.metric > 0.1 and r.extra["epochs_done"] == 8 for r in results)  # above chance, 8 epochs each
    print(f"\nREADME command: {len(told)} children ({len(results)} trained) in {elapsed:.0f} s")
