"""The simulated executor: the real search core, agent and store on a virtual clock (no waiting)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.run_dir import RunDir, SearchConfig
from agents.search import run_search
from nas_env.store import ResultStore


def _config(budget: int, workers: int, agent: str = "reinforce", env_id: str = "NAS-Bench-201-v0", **sim) -> SearchConfig:
    return SearchConfig(env_id=env_id, agent=agent, seed=3, budget=budget,
                        executor={"executor": "simulated", "max_in_flight": workers, **sim})  # fmt: skip


def _told(run_dir: Path) -> list[tuple[int, str, str, float]]:
    with ResultStore(RunDir(run_dir).store_path) as store:
        assert store.integrity_check() == ["ok"]
        return [(r.told_seq, r.arch_key, r.status, r.reward) for r in store.told()]


def test_500_children_64_in_flight_with_failures_and_preemptions_each_told_once(tmp_path: Path) -> None:
    log = tmp_path / "trainings.jsonl"
    config = SearchConfig(env_id="NAS-Synthetic-v0", agent="random", seed=1, budget=500,
                          env_kwargs={"num_layers": 4, "epochs": 10, "seconds_per_epoch": 30.0, "log_path": str(log)},
                          executor={"executor": "simulated", "max_in_flight": 64, "sim_failure_rate": 0.1,
                                    "sim_preemption_rate": 0.2, "sim_queue_delay_s": 5, "sim_startup_s": 10})  # fmt: skip
    summary = run_search(tmp_path / "run", config)
    assert summary.finished and summary.evaluations == 500 and summary.virtual_clock
    told = _told(tmp_path / "run")
    assert [seq for seq, *_ in told] == list(range(1, 501))
    statuses = [status for _, _, status, _ in told]
    assert 20 < statuses.count("failed") < 90  # about 10% of the distinct children
    with ResultStore(RunDir(tmp_path / "run").store_path) as store:
        results = {e.arch_key: e.result for e in store.evaluations()}
        assert len(store.in_flight()) == 0
    preempted = [r for r in results.values() if r.extra.get("preempted")]
    assert preempted and all(0 <= r.extra["resumed_from_epoch"] < 10 for r in preempted)
    # a preempted child occupied its worker longer than its 300 s of training (two start-ups, the lost part)
    assert all(r.wall_time_s > 300 + 2 * 10 for r in preempted)
    trained = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    assert len(trained) == len(set(trained)) == len(results)  # each distinct child evaluated once
    # 500 children of >= 310 s on 64 workers: the virtual makespan, not the wall clock, measures the run
    assert summary.wall_time_s >= 500 * 310 / 64 and 0.5 < summary.utilization <= 1.0


def test_the_virtual_clock_is_deterministic_by_seed(tmp_path: Path) -> None:
    sim = {"sim_failure_rate": 0.05, "sim_preemption_rate": 0.1, "sim_queue_delay_s": 30}
    first = run_search(tmp_path / "a", _config(200, 16, **sim))
    second = run_search(tmp_path / "b", _config(200, 16, **sim))
    assert _told(tmp_path / "a") == _told(tmp_path / "b")
    assert first.wall_time_s == second.wall_time_s and first.busy_worker_s == second.busy_worker_s
    other = run_search(tmp_path / "c", _config(200, 16, **{**sim, "sim_seed": 1}))
    assert other.wall_time_s != first.wall_time_s


def test_a_wall_time_budget_counts_virtual_seconds(tmp_path: Path) -> None:
    config = SearchConfig(**{**_config(100_000, 8).to_dict(), "max_wall_time_s": 20_000.0})
    summary = run_search(tmp_path / "run", config)
    assert summary.out_of_time and summary.finished and summary.in_flight == 0
    assert 20_000 <= summary.wall_time_s < 20_000 + 10 * 3_600  # stopped asking at 20,000 virtual s
    assert 20 < summary.evaluations < 2_000


def test_kill_9_and_resume_on_the_virtual_clock_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = run_search(tmp_path / "reference", _config(400, 32, sim_preemption_rate=0.1))
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "nas_cli", "search", "--env", "NAS-Bench-201-v0", "--agent", "reinforce",
               "--seed", "3", "--budget", "400", "--executor", "simulated", "--max-in-flight", "32",
               "--sim-preemption-rate", "0.1", "--run-dir", str(run_dir), "--no-progress", "--report-every", "0"]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store_path, told = RunDir(run_dir).store_path, 0
    deadline = time.monotonic() + 300
    while told < 150 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if store_path.exists():
            with ResultStore(store_path) as store:
                told = store.num_told()
    assert driver.poll() is None, driver.stderr.read()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert 150 <= _told_count(run_dir) < 400
    resumed = subprocess.run([sys.executable, "-m", "nas_cli", "search", "--resume", str(run_dir), "--no-progress",
                              "--report-every", "0"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert _told(run_dir) == _told(tmp_path / "reference")  # same architectures, order, rewards
    assert "utilization" in resumed.stdout and "virtual s" in resumed.stdout
    assert reference.evaluations == 400


def _told_count(run_dir: Path) -> int:
    with ResultStore(RunDir(run_dir).store_path) as store:
        return store.num_told()


@pytest.mark.parametrize("agent", ["evolution", "reinforce"])
def test_one_simulated_worker_is_the_sequential_protocol(tmp_path: Path, agent: str) -> None:
    """P = 1 on the virtual clock tells the same results in the same order as the inline executor under the
    NB201 simulated-time budget, so the parallelism study's P = 1 row is the protocol itself."""
    runs = {}
    for executor in ("inline", "simulated"):
        config = SearchConfig(env_id="NAS-Bench-201-v0", agent=agent, seed=5, budget=1_000, max_simulated_time_s=3_000.0,
                              env_kwargs={"dataset": "cifar10-valid", "fidelity": 12},
                              executor={"executor": executor, "max_in_flight": 1})  # fmt: skip
        summary = run_search(tmp_path / executor, config)
        assert summary.out_of_time and summary.evaluations > 10
        runs[executor] = _told(tmp_path / executor)
    assert runs["simulated"] == runs["inline"]
