"""Interrupted at any instant, nothing lost or trained twice: a search stopped at a named boundary
(``nas_env.crash_points``) by SIGKILL, SIGINT or SIGTERM, then resumed, ends as an uninterrupted run does.

The harness (``tests/crash_harness.py``) runs each driver in its own process and compares the resumed run with
a reference run of the same scenario. The grid: every boundary of a small NB201/REINFORCE run with each
signal; a spread over the Synthetic env (real checkpointed training, counted), regularized evolution and PPO;
the local executor with several children in flight and with one; the job boundary ``worker.result``; the real
SLURM cluster for a few points (marker ``slurm``); and the driver's own stop: a second Ctrl-C, SIGTERM.
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
from crash_harness import Reference, Scenario, check_store, crash_and_resume, read_state, run_reference, spread

from agents.run_dir import RunDir
from nas_env.store import ResultStore

#: every boundary a driver passes (the job's ``worker.result`` is tested on its own)
DRIVER_BOUNDARIES = {"store.begin", "store.inside", "store.commit", "store.committed", "dispatch.submitted",
                     "agent.told", "agent.checkpoint"}  # fmt: skip

# one architecture per controller update and a large step: every tell changes what is asked next
LEARNING = (("batch_size", 1), ("lr", 0.05))
NB201_REINFORCE = Scenario(env="nb201", agent="reinforce", budget=3, agent_kwargs=LEARNING)
SYNTHETIC_REINFORCE = Scenario(env="synthetic", agent="reinforce", budget=3, agent_kwargs=LEARNING)
NB201_EVOLUTION = Scenario(env="nb201", agent="evolution", budget=5,
                           agent_kwargs=(("population_size", 2), ("sample_size", 2)))  # fmt: skip
NB201_PPO = Scenario(env="nb201", agent="ppo", budget=3)
# several children in flight finish in the order the OS decides: a random agent (asks independent of results)
# makes the multiset of told results a function of the seed; one in flight keeps REINFORCE's order exact
LOCAL_RANDOM = Scenario(env="synthetic", agent="random", executor="local", parallel=2, budget=3)
LOCAL_REINFORCE = Scenario(env="synthetic", agent="reinforce", executor="local", parallel=1, budget=2,
                           agent_kwargs=LEARNING)  # fmt: skip
# the same children through a pool of two local workers that pull them from the run directory
POOL_RANDOM = Scenario(env="synthetic", agent="random", executor="local", parallel=2, budget=3,
                       extra_args=("--pool", "2", "--poll-interval-s", "0.2"))  # fmt: skip

_references: dict[Scenario, Reference] = {}


def reference(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One uninterrupted run per scenario for the whole module."""
    if scenario not in _references:
        _references[scenario] = run_reference(scenario, tmp_path_factory.mktemp("reference"))
    return _references[scenario]


def by_kind(ref: Reference, per_kind: int) -> list[tuple[str, int]]:
    """``per_kind`` Ks spread over each driver boundary the reference passed (its first and last included)."""
    return [(name, k) for name in sorted(DRIVER_BOUNDARIES) for k in spread(ref.counts.get(name, 0), per_kind)]


# ---------------------------------------------------------------------------------------------- every boundary
@pytest.mark.parametrize("sig", ["KILL", "INT", "TERM"])
def test_every_boundary_of_a_run_with_each_signal(
    sig: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """NB201, REINFORCE, inline: the K-th boundary of any kind for every K an uninterrupted run passes (SIGKILL;
    the two stop signals share one handler, so they take 7 Ks spread over the run), and the first and the last
    boundary of each kind by name."""
    ref = reference(NB201_REINFORCE, tmp_path_factory)
    assert DRIVER_BOUNDARIES <= set(ref.counts), ref.counts  # the run passes every kind of boundary
    hit: set[str] = set()
    ks = range(1, ref.counts["*"] + 1) if sig == "KILL" else spread(ref.counts["*"], 7)
    for k in ks:
        crash_and_resume(ref, tmp_path / f"k{k}", "*", k, sig)
    for name in DRIVER_BOUNDARIES:  # and named: the first and the last of each kind
        for k in sorted({1, ref.counts[name]}):
            report = crash_and_resume(ref, tmp_path / f"{name}-{k}", name, k, sig)
            hit.add(report.name)
    assert hit == DRIVER_BOUNDARIES


# ---------------------------------------------------------------------------------------------- env, agents
def test_synthetic_children_each_kind_of_boundary(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Checkpointed training counted epoch by epoch: a result lost with its driver is re-run from the child's
    checkpoint, never trained again."""
    ref = reference(SYNTHETIC_REINFORCE, tmp_path_factory)
    for name, k in by_kind(ref, 2):
        crash_and_resume(ref, tmp_path / f"{name}-{k}-kill", name, k, "KILL")
    for name in ("store.inside", "agent.told"):
        for sig in ("INT", "TERM"):
            crash_and_resume(ref, tmp_path / f"{name}-{sig}", name, 2, sig)


def test_evolution_each_kind_of_boundary(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A population of 2 so that the run mutates parents (tournaments) after its first two results."""
    ref = reference(NB201_EVOLUTION, tmp_path_factory)
    for name, k in by_kind(ref, 2):
        crash_and_resume(ref, tmp_path / f"{name}-{k}-kill", name, k, "KILL")
    crash_and_resume(ref, tmp_path / "told-int", "agent.told", 4, "INT")
    crash_and_resume(ref, tmp_path / "inside-term", "store.inside", ref.counts["store.inside"] // 2, "TERM")


def test_ppo_each_kind_of_boundary(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """SB3's PPO through the vector env: the store and the told prefix (see ``Scenario.reproducible``)."""
    ref = reference(NB201_PPO, tmp_path_factory)
    for name, k in by_kind(ref, 2):
        crash_and_resume(ref, tmp_path / f"{name}-{k}-kill", name, k, "KILL")
    crash_and_resume(ref, tmp_path / "told-term", "agent.told", 2, "TERM")
    crash_and_resume(ref, tmp_path / "inside-int", "store.inside", 3, "INT")


# ---------------------------------------------------------------------------------------------- local jobs
@pytest.mark.parametrize(
    "name,k,sig",
    [
        ("dispatch.submitted", 1, "KILL"),  # job ids never recorded: the jobs are found by their claims
        ("store.inside", 4, "INT"),  # in the event of the first result
        ("agent.told", 2, "TERM"),
        ("worker.result", 1, "TERM"),  # a job asked to stop after training still delivers its result
    ],
)
def test_local_jobs_several_in_flight(
    name: str, k: int, sig: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    crash_and_resume(reference(LOCAL_RANDOM, tmp_path_factory), tmp_path, name, k, sig)


def test_local_jobs_one_in_flight_keep_the_order(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    ref = reference(LOCAL_REINFORCE, tmp_path_factory)
    crash_and_resume(ref, tmp_path / "told", "agent.told", 1, "KILL")
    crash_and_resume(ref, tmp_path / "submitted", "dispatch.submitted", 2, "KILL")


@pytest.mark.parametrize("sig", ["KILL", "INT"])
def test_local_job_lost_at_worker_result_is_run_again(
    sig: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A job stopped after training, before its result is written, ends LOST (not FAILED, never cached): the
    dispatcher releases its claim and runs the task again, which resumes from the task's last checkpoint (the
    harness counts trained epochs: none twice)."""
    report = crash_and_resume(reference(LOCAL_RANDOM, tmp_path_factory), tmp_path, "worker.result", 1, sig)
    assert (tmp_path / "stopped-once").exists()  # a job really was stopped there (and its task run again)
    assert report.first.returncode == 0 and report.told_at_crash == 3  # the driver went on by itself


@pytest.mark.parametrize("name", ["dispatch.submitted", "worker.result"])
def test_pool_driver_or_worker_killed(name: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A pool's driver killed after writing its tasks (the resumed driver finds them by their claims or trains
    them once), or a pool worker killed after training, before its result is written (the driver sees the
    worker dead, releases its claim, and another worker resumes the task from its checkpoint): nothing lost,
    no epoch trained twice."""
    crash_and_resume(reference(POOL_RANDOM, tmp_path_factory), tmp_path, name, 1, "KILL")
    if name == "worker.result":
        assert (tmp_path / "stopped-once").exists()  # a worker really was stopped there


# ---------------------------------------------------------------------------------------------- SLURM
@pytest.mark.slurm
@pytest.mark.parametrize(
    "name,k,sig", [("dispatch.submitted", 1, "KILL"), ("agent.told", 1, "TERM"), ("worker.result", 1, "TERM")]
)
def test_slurm_jobs(
    name: str, k: int, sig: str, slurm_cluster: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    scenario = Scenario(env="synthetic", agent="random", executor="slurm", parallel=2, budget=2, timeout_s=300,
                        extra_args=("--slurm-partition", "debug", "--time-limit-min", "5"))  # fmt: skip
    crash_and_resume(reference(scenario, tmp_path_factory), tmp_path, name, k, sig)


# ---------------------------------------------------------------------------------------------- stopping
def _search(run_dir: Path, log: Path) -> subprocess.Popen[str]:
    env_kwargs = {"num_layers": 2, "epochs": 3, "seconds_per_epoch": 0.05, "log_path": str(log)}
    command = [sys.executable, "-m", "nas_cli", "search", "--env", "NAS-Synthetic-v0", "--agent", "reinforce",
               "--budget", "10", "--executor", "inline", "--env-kwargs", json.dumps(env_kwargs), "--run-dir",
               str(run_dir), "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    env.pop("NAS_CRASH_AT", None)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_told(driver: subprocess.Popen[str], run_dir: Path, told: int) -> None:
    """Until the store shows ``told`` results (the driver is then mid-search), or fail."""
    store_path = RunDir(run_dir).store_path
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()[1]
        if store_path.exists():
            with ResultStore(store_path) as store:
                if store.num_told() >= told:
                    return
        time.sleep(0.02)
    pytest.fail(f"the search did not tell {told} results in time")


def _resume_and_check(run_dir: Path, log: Path) -> None:
    resumed = subprocess.run([sys.executable, "-m", "nas_cli", "search", "--resume", str(run_dir), "--no-progress"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    scenario = Scenario(env="synthetic", budget=10, epochs=3)
    check_store(scenario, read_state(scenario, run_dir, log))


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
def test_stop_signal_ends_between_events_and_resumes(sig: int, status: int, tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "trainings.jsonl"
    driver = _search(run_dir, log)
    _wait_told(driver, run_dir, 2)
    driver.send_signal(sig)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == status, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    _resume_and_check(run_dir, log)


def test_second_ctrl_c_while_stopping_is_ignored(tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "trainings.jsonl"
    driver = _search(run_dir, log)
    _wait_told(driver, run_dir, 2)
    driver.send_signal(signal.SIGINT)
    driver.send_signal(signal.SIGINT)  # at once: inside the same event, or while the first one is stopping
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    assert "Traceback" not in stderr
    _resume_and_check(run_dir, log)
