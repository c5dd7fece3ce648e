"""`nas search` end to end on the real one-node SLURM cluster: children as job arrays, a killed driver
reattaches to the jobs still running instead of submitting them again."""

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

pytestmark = pytest.mark.slurm


def _sacct_jobs(job_name: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "--parsable2", "--noheader", "--starttime=2000-01-01", "--name", job_name, "-X",
         "--format=JobID,State,JobName"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_search_on_slurm_survives_a_killed_driver(slurm_cluster: Path, tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "evaluations.jsonl"
    env_kwargs = json.dumps({"num_layers": 3, "epochs": 3, "seconds_per_epoch": 1.0, "log_path": str(log)})
    base = [sys.executable, "-m", "nas_cli", "search"]
    command = base + ["--env", "NAS-Synthetic-v0", "--agent", "evolution", "--budget", "8", "--executor", "slurm",
                      "--slurm-partition", "debug", "--max-in-flight", "4", "--time-limit-min", "5",
                      "--slurm-job-name", "search-e2e", "--env-kwargs", env_kwargs, "--run-dir", str(run_dir),
                      "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ})
    store_path = RunDir(run_dir).store_path
    deadline = time.monotonic() + 120
    submitted = []
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
        if store_path.exists():
            with ResultStore(store_path) as store:
                submitted = [r for r in store.in_flight() if r.job_id]
            if len(submitted) >= 4:
                break
    assert driver.poll() is None, driver.stderr.read()
    # the kill must land with max-in-flight jobs submitted and running, or the reattach check below is empty
    assert len(submitted) >= 4, f"only {len(submitted)} jobs submitted before the deadline"
    os.kill(driver.pid, signal.SIGKILL)  # jobs keep running on the cluster
    driver.wait()
    ids_at_kill = {r.job_id for r in submitted}
    assert len(ids_at_kill) == len(submitted)  # one job per proposal

    resumed = subprocess.run(base + ["--resume", str(run_dir), "--no-progress"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with ResultStore(store_path) as store:
        told = store.told()
        assert len(told) == 8 and not store.in_flight()
        job_ids = {e.result.job_id for e in store.evaluations()}
    assert ids_at_kill <= job_ids  # the jobs running at the kill delivered the results: reattached
    keys = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    assert len(keys) == len(set(keys)), "an architecture was trained twice"
    deadline = time.monotonic() + 30  # slurmdbd records array tasks with a short lag
    while len(_sacct_jobs("search-e2e")) < len(keys) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(_sacct_jobs("search-e2e")) == len(keys)  # one job per evaluation, none submitted twice
