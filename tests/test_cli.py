"""The ``nas`` command line as a user meets it: bad input gives one line naming the problem, Ctrl-C
leaves a run that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.run_dir import RunDir
from nas_env.store import ResultStore


def nas(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas_cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=cwd)  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "0"], "budget must be >= 1 evaluation, got 0"),
        (["--env-kwargs", '{"budget": "huge"}'], "unknown training budget preset 'huge'"),
        (["--env", "NAS-Nothing-v0"], "NAS-Nothing"),
        (["--resume", "no-such-run"], "not a run directory"),
    ],
    ids=["budget", "budget-preset", "env-id", "resume"],
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path: Path, args: list[str], message: str) -> None:
    done = nas("search", "--no-progress", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("nas search: error: ") and message in last, done.stderr
    assert "Traceback" not in done.stderr


def test_missing_cluster_config_is_named_before_anything_is_submitted(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    done = nas("search", "--no-progress", "--env", "NAS-Synthetic-v0", "--executor", "slurm",
               "--run-dir", str(tmp_path / "run"), env={"SLURM_CONF": str(missing)})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"nas search: error: SLURM_CONF={missing} is not a file" in done.stderr
    assert "Traceback" not in done.stderr
    with ResultStore(RunDir(tmp_path / "run").store_path) as store:
        assert store.count() == 0 and not store.in_flight()


def test_traceback_on_request(tmp_path: Path) -> None:
    done = nas("search", "--no-progress", "--budget", "0", env={"NAS_TRACEBACK": "1"}, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError" in done.stderr


def test_ctrl_c_keeps_the_store_and_the_run_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env_kwargs = json.dumps({"num_layers": 3, "epochs": 2, "seconds_per_epoch": 0.2})
    command = [sys.executable, "-m", "nas_cli", "search", "--env", "NAS-Synthetic-v0", "--agent", "random",
               "--budget", "12", "--executor", "inline", "--env-kwargs", env_kwargs, "--run-dir", str(run_dir),
               "--no-progress"]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store_path, told = RunDir(run_dir).store_path, 0
    deadline = time.monotonic() + 60
    while told < 3 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
        if store_path.exists():
            with ResultStore(store_path) as store:
                told = store.num_told()
    assert driver.poll() is None, driver.stderr.read()
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    with ResultStore(store_path) as store:
        assert 3 <= store.num_told() < 12

    resumed = nas("search", "--resume", str(run_dir), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    with ResultStore(store_path) as store:
        assert store.num_told() == 12 and store.count() == 12
