"""The ask/tell search loop: budget, determinism, failures as rewards, curriculum, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.run_dir import RunDir, RunDirError, SearchConfig
from agents.search import Search
from nas_env.results import Status
from nas_env.store import ResultStore


def _run(run_dir: Path, config: SearchConfig) -> Search:
    search = Search(run_dir, config)
    search.run()
    search.close()
    return search


def _told(run_dir: Path) -> list[tuple[str, float]]:
    with ResultStore(RunDir(run_dir).store_path) as store:
        return [(r.arch_key, r.reward) for r in store.told()]


INLINE = {"executor": "inline", "max_in_flight": 4}


@pytest.mark.parametrize("agent", ["reinforce", "random", "evolution"])
def test_same_seed_same_run_and_budget_respected(tmp_path: Path, agent: str) -> None:
    config = SearchConfig(env_id="NAS-Synthetic-v0", env_kwargs={"num_layers": 3}, agent=agent, seed=5,
                          budget=30, executor=INLINE)
    _run(tmp_path / "a", config)
    _run(tmp_path / "b", config)
    first, second = _told(tmp_path / "a"), _told(tmp_path / "b")
    assert len(first) == 30
    assert first == second
    other = SearchConfig(**{**config.to_dict(), "seed": 6})
    _run(tmp_path / "c", other)
    assert _told(tmp_path / "c") != first


def test_repeats_are_answered_from_the_store(tmp_path: Path) -> None:
    # a one-layer, 4x4x4 space has 64 architectures: 100 samples must repeat, none is evaluated twice
    log = tmp_path / "evaluations.jsonl"
    config = SearchConfig(env_id="NAS-Synthetic-v0", env_kwargs={"num_layers": 1, "log_path": str(log)},
                          agent="random", budget=100, executor=INLINE)
    _run(tmp_path / "run", config)
    keys = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    assert len(keys) == len(set(keys))  # no architecture trained twice
    with ResultStore(RunDir(tmp_path / "run").store_path) as store:
        told = store.told()
        assert len(told) == 100
        assert sum(not r.cached for r in told) == len(keys) == store.count()
        assert sum(r.cached for r in told) == 100 - len(keys) > 0  # the repeats were answered, not trained


def test_failures_are_rewards_and_the_search_goes_on(tmp_path: Path, data_root: Path) -> None:
    recipe = {"epochs": 3, "train_images": 512, "val_images": 64, "resolution": 8, "batch_size": 32, "lr": 1e6}
    config = SearchConfig(
        env_id="NAS-CIFAR10-v0",
        env_kwargs={"recipe": recipe, "device": "cpu", "num_layers": 2, "failure_reward": -0.25,
                    "data_dir": str(data_root / "cifar10-subset")},
        agent="random", budget=3, executor=INLINE,
    )
    _run(tmp_path / "run", config)
    with ResultStore(RunDir(tmp_path / "run").store_path) as store:
        results = [e.result for e in store.evaluations()]
    assert len(results) == 3
    assert {r.status for r in results} == {Status.DIVERGED}
    assert all(r.reward == -0.25 for r in results)


def test_curriculum_grows_the_depth_on_schedule(tmp_path: Path) -> None:
    config = SearchConfig(env_id="NAS-Synthetic-v0", env_kwargs={"num_layers": 2}, agent="reinforce",
                          budget=24, executor={"executor": "inline", "max_in_flight": 3},
                          curriculum={"start_layers": 2, "step_layers": 2, "every": 8})
    _run(tmp_path / "run", config)
    with ResultStore(RunDir(tmp_path / "run").store_path) as store:
        depths = [r.space_config["num_layers"] for r in sorted(store.told(), key=lambda r: r.proposal_id)]
    assert depths == [2] * 8 + [4] * 8 + [6] * 8
    scalars = (tmp_path / "run" / "scalars.csv").read_text()
    assert "search/depth" in scalars


def test_a_different_config_in_an_existing_run_dir_is_refused(tmp_path: Path) -> None:
    config = SearchConfig(env_id="NAS-Synthetic-v0", agent="random", budget=2, executor=INLINE)
    _run(tmp_path / "run", config)
    with pytest.raises(RunDirError, match="holds a search with seed=0, not 1; a resumed search may change only"):
        Search(tmp_path / "run", SearchConfig(**{**config.to_dict(), "seed": 1}))
    with pytest.raises(RunDirError, match="holds a search with env_id='NAS-Synthetic-v0', not 'NAS-Bench-201-v0'"):
        Search(tmp_path / "run", SearchConfig(**{**config.to_dict(), "env_id": "NAS-Bench-201-v0"}))
    with pytest.raises(RunDirError, match="not a run directory"):
        Search(tmp_path / "nothing-here")
    resumed = Search(tmp_path / "run", SearchConfig(**{**config.to_dict(), "budget": 5}))  # limits may change
    assert resumed.run().evaluations == 5
    resumed.close()


def _nas(*args: str) -> list[str]:
    return [sys.executable, "-m", "nas_cli", *args]


@pytest.mark.parametrize("job_ids_recorded", [True, False], ids=["ids-recorded", "ids-lost"])
def test_kill_9_mid_search_then_resume_loses_nothing_and_trains_nothing_twice(
    tmp_path: Path, job_ids_recorded: bool
) -> None:
    """``ids-lost`` is a kill between submitting jobs and recording their ids: the resumed search
    must find those jobs through their claims (or out-race them) rather than train them again."""
    run_dir, log = tmp_path / "run", tmp_path / "evaluations.jsonl"
    env_kwargs = json.dumps({"num_layers": 4, "epochs": 2, "seconds_per_epoch": 0.15, "log_path": str(log)})
    command = _nas("search", "--env", "NAS-Synthetic-v0", "--agent", "reinforce", "--budget", "20",
                   "--executor", "local", "--parallel", "3", "--env-kwargs", env_kwargs,
                   "--run-dir", str(run_dir), "--no-progress")
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store_path = RunDir(run_dir).store_path
    deadline = time.monotonic() + 120
    told = in_flight = 0
    while not (told >= 6 and in_flight > 0) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
        if store_path.exists():
            with ResultStore(store_path) as store:
                told, in_flight = store.num_told(), len(store.in_flight())
    assert driver.poll() is None, driver.stderr.read()
    os.kill(driver.pid, signal.SIGKILL)  # mid-search, with evaluations in flight
    driver.wait()
    with ResultStore(store_path) as store:
        told_at_kill, in_flight_at_kill = store.num_told(), len(store.in_flight())
    assert 6 <= told_at_kill < 20 and in_flight_at_kill > 0
    if not job_ids_recorded:
        with ResultStore(store_path) as store, store.transaction():
            store.set_job_ids({record.proposal_id: None for record in store.in_flight()})

    resumed = subprocess.run(_nas("search", "--resume", str(run_dir), "--no-progress"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with ResultStore(store_path) as store:
        told = store.told()
        assert len(told) == 20 and not store.in_flight()
        assert [r.told_seq for r in told] == list(range(1, 21))
        assert len({r.proposal_id for r in told}) == 20
        evaluated = {e.arch_key for e in store.evaluations()}
    keys = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    assert len(keys) == len(set(keys)), "an architecture was trained twice"
    assert set(keys) == evaluated


def test_cli_runs_the_three_agents_on_real_cifar10(tmp_path: Path, data_root: Path) -> None:
    for agent in ("reinforce", "random", "evolution"):
        out = subprocess.run(
            _nas("search", "--env", "NAS-CIFAR10-v0", "--agent", agent, "--budget", "2", "--recipe", "tiny",
                 "--layers", "2", "--device", "cpu", "--data-dir", str(data_root / "cifar10-subset"),
                 "--executor", "inline", "--run-dir", str(tmp_path / agent), "--no-progress"),
            capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert "2/2 evaluations, finished" in out.stdout
        with ResultStore(RunDir(tmp_path / agent).store_path) as store:
            results = [e.result for e in store.evaluations()]
        assert results and all(r.status is Status.OK and 0 < r.metric <= 1 for r in results)
