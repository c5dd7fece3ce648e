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
        (["--env-kwargs", '{"recipe": "huge"}'], "unknown training recipe preset 'huge'"),
        (["--env", "NAS-Nothing-v0"], "NAS-Nothing"),
        (["--resume", "no-such-run"], "not a run directory"),
        (["--env", "NAS-Bench-201-v0", "--env-kwargs", '{"fidelty": 12}'],
         "NAS-Bench-201-v0: unknown keyword 'fidelty' (did you mean 'fidelity'?)"),
        (["--env", "NAS-Bench-201-v0", "--env-kwargs", '{"fidelity": "12"}'], "keyword 'fidelity' expects int, got str"),
        (["--env", "NAS-Bench-201-v0", "--parallel", "0"], "max_in_flight must be >= 1, got 0"),
    ],
    ids=["budget", "recipe-preset", "env-id", "resume", "misspelt-kwarg", "ill-typed-kwarg", "parallel-0"],
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path: Path, args: list[str], message: str) -> None:
    done = nas("search", "--no-progress", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    _assert_one_error_line(done, message)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # a refused run leaves nothing


def _assert_one_error_line(done: subprocess.CompletedProcess, message: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas search: error: ") and message in lines[0], done.stderr


def test_missing_cluster_config_is_named_before_anything_is_submitted(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    done = nas("search", "--no-progress", "--env", "NAS-Synthetic-v0", "--executor", "slurm",
               "--run-dir", str(tmp_path / "run"), env={"SLURM_CONF": str(missing)})  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"nas search: error: SLURM_CONF={missing} is not a file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # nothing was written, let alone submitted


def test_traceback_on_request(tmp_path: Path) -> None:
    done = nas("search", "--no-progress", "--budget", "0", env={"NAS_TRACEBACK": "1"}, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError" in done.stderr


def _slow_synthetic_search(run_dir: Path, budget: int, num_layers: int, epochs: int) -> subprocess.Popen:
    """A random search on NAS-Synthetic-v0 whose children take ``epochs`` x 0.2 s, inline, as a subprocess."""
    env_kwargs = json.dumps({"num_layers": num_layers, "epochs": epochs, "seconds_per_epoch": 0.2})
    command = [sys.executable, "-m", "nas_cli", "search", "--env", "NAS-Synthetic-v0", "--agent", "random",
               "--budget", str(budget), "--executor", "inline", "--env-kwargs", env_kwargs, "--run-dir", str(run_dir),
               "--no-progress"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_keeps_the_store_and_the_run_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    driver = _slow_synthetic_search(run_dir, budget=12, num_layers=3, epochs=2)
    store_path = RunDir(run_dir).store_path
    _wait_for_told(run_dir, 3, driver)
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


def _nb201(run_dir: Path, agent: str, budget: int, *extra: str) -> subprocess.CompletedProcess:
    return nas("search", "--env", "NAS-Bench-201-v0", "--agent", agent, "--budget", str(budget), "--executor",
               "inline", "--run-dir", str(run_dir), "--no-progress", *extra)  # fmt: skip


def _told(run_dir: Path) -> int:
    with ResultStore(RunDir(run_dir).store_path) as store:
        return store.num_told()


@pytest.mark.parametrize("agent", ["reinforce", "evolution", "ppo"])
def test_resume_with_a_larger_budget_extends_the_run_for_every_agent(tmp_path: Path, agent: str) -> None:
    run_dir = tmp_path / "run"
    first = _nb201(run_dir, agent, 8)
    assert first.returncode == 0, first.stderr
    assert _told(run_dir) == 8
    more = nas("search", "--resume", str(run_dir), "--budget", "14", "--no-progress")
    assert more.returncode == 0, more.stderr
    assert "14/14 evaluations, finished" in more.stdout
    assert _told(run_dir) == 14
    assert RunDir(run_dir).read_config().budget == 14
    lower = nas("search", "--resume", str(run_dir), "--budget", "10", "--no-progress")
    assert lower.returncode == 2
    _assert_one_error_line(lower, "has already told 14 evaluations; a budget of 10 is below that")


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [("--seed", "3", "seed=0, not 3"), ("--env", "NAS-Synthetic-v0", "env_id='NAS-Bench-201-v0', not 'NAS-Synthetic-v0'"),
     ("--agent", "random", "agent='evolution', not 'random'")],
)
def test_resume_names_the_field_that_would_change_the_search(tmp_path: Path, flag: str, value: str, field: str) -> None:
    run_dir = tmp_path / "run"
    assert _nb201(run_dir, "evolution", 3).returncode == 0
    done = nas("search", "--resume", str(run_dir), flag, value, "--no-progress")
    assert done.returncode == 2
    _assert_one_error_line(done, f"holds a search with {field}")
    assert _told(run_dir) == 3


def test_a_corrupt_store_is_named_and_nothing_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert _nb201(run_dir, "random", 3).returncode == 0
    store = RunDir(run_dir).store_path
    for name in ("store.sqlite-wal", "store.sqlite-shm"):
        (run_dir / name).unlink(missing_ok=True)
    store.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))  # a header, then garbage
    done = nas("search", "--resume", str(run_dir), "--budget", "6", "--no-progress")
    assert done.returncode == 2
    _assert_one_error_line(done, f"result store {store} is damaged")


def test_a_corrupt_config_is_named(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert _nb201(run_dir, "random", 2).returncode == 0
    config = RunDir(run_dir).config_path
    config.write_text(config.read_text()[:40])
    done = nas("search", "--resume", str(run_dir), "--no-progress")
    assert done.returncode == 2
    _assert_one_error_line(done, f"{config} is damaged")


def _setup_error(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    done = nas("search", "--env", "NAS-CIFAR10-v0", "--recipe", "tiny", "--layers", "2", "--executor", "local",
               "--run-dir", str(tmp_path / "run"), "--no-progress", *extra, env=env)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "run").exists()  # stopped before any job was submitted (no jobs/ folder either)
    return done


def test_an_empty_data_dir_stops_before_any_child(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    # the download is attempted once, in the driver, through a proxy that refuses it (hermetic, fast)
    unreachable = {"NAS_DATA_DIR": str(empty), "NAS_CACHE_DIR": str(tmp_path / "cache"),
                   "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}  # fmt: skip
    done = _setup_error(tmp_path, unreachable)
    _assert_one_error_line(done, "cannot download")


def test_a_truncated_batch_file_stops_before_any_child(tmp_path: Path, cifar_dir: Path) -> None:
    import shutil

    copy = tmp_path / "data" / "cifar10-subset"
    shutil.copytree(cifar_dir, copy)
    batch = copy / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])
    done = _setup_error(tmp_path, {"NAS_DATA_DIR": str(tmp_path / "data")})
    _assert_one_error_line(done, f"corrupt dataset file {batch}")


def test_a_device_that_is_not_there_stops_before_any_child(tmp_path: Path, data_root: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: ask for a device index beyond it instead")
    done = _setup_error(tmp_path, {"NAS_DATA_DIR": str(data_root)}, "--device", "cuda")
    _assert_one_error_line(done, "device 'cuda' requested but torch sees no CUDA device")


def test_a_second_driver_on_the_same_run_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = _slow_synthetic_search(run_dir, budget=200, num_layers=2, epochs=1)
    try:
        _wait_for_told(run_dir, 1, first)
        second = nas("search", "--resume", str(run_dir), "--no-progress")
        assert second.returncode == 2
        _assert_one_error_line(second, f"is in use by a running search driver (host {os.uname().nodename}, pid {first.pid})")
    finally:
        first.kill()
        first.wait()
    # kill -9 leaves nothing behind that blocks a resume
    resumed = nas("search", "--resume", str(run_dir), "--budget", str(_told(run_dir) + 2), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr


def _wait_for_told(run_dir: Path, count: int, driver: subprocess.Popen) -> None:
    store_path, told = RunDir(run_dir).store_path, 0
    deadline = time.monotonic() + 120
    while told < count and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
        if store_path.exists():
            with ResultStore(store_path) as store:
                told = store.num_told()
    assert driver.poll() is None and told >= count, driver.stderr.read() if driver.poll() is not None else told


def test_a_table_lookup_env_runs_its_children_inline_unless_told(tmp_path: Path) -> None:
    """NAS-Bench-201's reward is a lookup: without --executor its children run in the driver (no process per
    child), so a 30-child search takes about a second; an explicit executor is kept, other envs stay local."""
    from nas_cli.main import build_parser, main
    from nas_cli.search import DEFAULT_AGENT, DEFAULT_ENV, _search_config

    run_dir = tmp_path / "run"
    assert main(["search", "--env", "NAS-Bench-201-v0", "--budget", "30", "--run-dir", str(run_dir), "--no-progress",
                 "--report-every", "0"]) == 0  # fmt: skip
    assert RunDir(run_dir).read_config().executor["executor"] == "inline"
    with ResultStore(RunDir(run_dir).store_path) as store:
        assert store.num_told() == 30
    parser = build_parser()

    def executor(*argv: str) -> str:
        args = parser.parse_args(["search", *argv])
        args.env, args.agent, args.seed = args.env or DEFAULT_ENV, args.agent or DEFAULT_AGENT, args.seed or 0
        return _search_config(args).executor["executor"]

    assert executor("--env", "NAS-Bench-201-v0", "--executor", "local") == "local"
    assert executor("--env", "NAS-Synthetic-v0") == "local"
    assert executor() == "local"
