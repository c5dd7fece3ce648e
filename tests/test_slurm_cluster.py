"""The Dispatcher against a real one-node SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd).

The cluster is started once for the test session in a temporary folder by ``local_slurm.local_cluster``
(the ``slurm_cluster`` fixture of tests/conftest.py) and stopped at the end. The tests are skipped only when the Debian packages are not installed
(``slurm/cluster/install-debian.sh`` installs them; CI does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from submitit.slurm.slurm import SlurmJob

from nas_env.evaluators import SyntheticEvaluator
from nas_env.results import Status
from nas_env.spaces.cnn import CNNSpace
from slurm import ClusterConfigError, Dispatcher, ExecutorConfig, Task, checkpoint_path, faults
from slurm import slurm_backend
from local_slurm import (
    URGENT_PARTITION,
    collect_completed as collect,
    distinct_architectures,
    free_ports,
    simulate_preemption,
)

pytestmark = pytest.mark.slurm

SPACE = CNNSpace(num_layers=3)
PARTITION = "debug"


@pytest.fixture(scope="module")
def cluster(slurm_cluster: Path) -> Path:
    """The session's running cluster (tests/conftest.py); its slurm.conf is in os.environ["SLURM_CONF"]."""
    return slurm_cluster


def archs(n: int, offset: int = 0) -> list:
    """``n`` architectures of SPACE with distinct keys (seeded)."""
    return distinct_architectures(SPACE, n, offset)


def sacct(*args: str) -> list[list[str]]:
    """Rows of ``sacct --parsable2 --noheader`` over every job this cluster has seen."""
    out = subprocess.run(
        ["sacct", "--parsable2", "--noheader", "--starttime=2000-01-01", *args],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return [line.split("|") for line in out.splitlines() if line]


def settled(*args: str, timeout: float = 30.0, expected: int | None = None) -> list[list[str]]:
    """``sacct(*args)`` once no listed job is still running (a result can arrive before the job ends) and,
    with ``expected``, once that many rows are there (slurmdbd records array tasks with a short lag)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sacct(*args)
        complete = expected is None or len(rows) >= expected
        if (complete and all(not faults.is_active(r[1]) for r in rows)) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def config(job_name: str, **overrides) -> ExecutorConfig:
    base = {
        "executor": "slurm", "partition": PARTITION, "time_limit_min": 5, "poll_interval_s": 0.5,
        "max_in_flight": 16, "job_name": job_name,
    }  # fmt: skip
    return ExecutorConfig(**{**base, **overrides})




def read_epoch(path: Path) -> int:
    import pickle

    try:
        return int(pickle.loads(path.read_bytes())["epoch"])
    except (OSError, EOFError, pickle.UnpicklingError, KeyError):
        return 0


def wait_for_epoch(path: Path, epoch: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while read_epoch(path) < epoch:
        assert time.monotonic() < deadline, f"{path.name} never reached epoch {epoch}"
        time.sleep(0.1)


def counting_wrapper(folder: Path, command: str) -> Path:
    """A folder whose ``command`` logs each call, then runs the real one (put it first on PATH)."""
    real = shutil.which(command)
    assert real is not None
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / command
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> "{folder}/{command}.calls"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return folder / f"{command}.calls"


def test_search_batch_as_job_arrays_with_faults(
    cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 children as one job array: one raises, one is scancel'ed, one is preempted and resumes."""
    calls_log = counting_wrapper(tmp_path / "bin", "sacct")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    children = archs(10)
    fail_key = SPACE.key(children[2])
    quick = SyntheticEvaluator(SPACE, target_seed=7, epochs=2, seconds_per_epoch=0.5, fail_keys=[fail_key])
    # preempted after its second epoch: ten more seconds of training leave the signals time to arrive on a busy machine
    long = SyntheticEvaluator(SPACE, target_seed=7, epochs=12, seconds_per_epoch=1.0)
    endless = SyntheticEvaluator(SPACE, target_seed=7, epochs=600, seconds_per_epoch=1.0, failure_reward=-1.0)
    evaluators = {0: long, 1: endless}
    tasks = [Task(f"child-{i}", evaluators.get(i, quick), arch) for i, arch in enumerate(children)]

    dispatcher = Dispatcher(config("search-batch"), tmp_path / "jobs")
    dispatcher.check()
    watcher_calls = SlurmJob.watcher.num_calls
    ids = dispatcher.submit(tasks)
    array_id = ids[0].split("_")[0]
    assert ids == [f"{array_id}_{i}" for i in range(10)]  # one array, task i is child i

    # preempt child-0 once it has trained two epochs: SIGTERM + USR2, as submitit's job._interrupt()
    # (which SLURM 22.05 refuses for an array task with pending siblings; see simulate_preemption)
    wait_for_epoch(checkpoint_path(dispatcher.folder, "child-0"), 2)
    simulate_preemption(ids[0])
    # cancel child-1 from outside the dispatcher, while it runs
    wait_for_epoch(checkpoint_path(dispatcher.folder, "child-1"), 1)
    subprocess.run(["scancel", ids[1]], check=True, timeout=30)

    start, sacct_calls_before = time.monotonic(), len(calls_log.read_text().splitlines())
    dispatcher_calls_before = dispatcher.scheduler_calls
    done = collect(dispatcher, 10, timeout=150)
    elapsed = time.monotonic() - start
    sacct_calls = len(calls_log.read_text().splitlines()) - sacct_calls_before

    failed = done["child-2"].result
    assert failed.status is Status.FAILED and failed.reward == 0.0
    assert "Traceback" in failed.error and "RuntimeError: injected failure" in failed.error
    cancelled = done["child-1"].result
    assert cancelled.status is Status.CANCELLED and cancelled.reward == -1.0
    assert "CANCELLED" in cancelled.error
    preempted = done["child-0"].result
    assert preempted.status is Status.OK, preempted.error
    assert preempted.extra["resumed_from_epoch"] >= 2
    assert preempted.reward == pytest.approx(long.score(SPACE.encode(children[0])))
    for i in range(3, 10):
        result = done[f"child-{i}"].result
        assert result.status is Status.OK, result.error
        assert result.reward == pytest.approx(quick.score(SPACE.encode(children[i])))
    assert {k: c.job_id for k, c in done.items()} == {t.key: i for t, i in zip(tasks, ids)}

    # what SLURM recorded: 10 tasks of one array, states matching the results, child-0 requeued
    rows = {r[0]: r[1] for r in settled("-X", "-j", array_id, "-o", "JobID,State", expected=len(ids))}
    assert sorted(rows) == sorted(ids)
    assert rows[ids[1]].startswith("CANCELLED") and rows[ids[2]] == "FAILED"
    assert all(rows[ids[i]] == "COMPLETED" for i in (0, *range(3, 10)))
    history = [r[1] for r in sacct("-X", "-D", "-j", ids[0], "-o", "JobID,State")]
    assert "REQUEUED" in history, history

    # status queries: one batched sacct per poll interval, never one per job; submitit's own watcher unused
    assert sacct_calls == dispatcher.scheduler_calls - dispatcher_calls_before  # no hidden sacct calls
    assert sacct_calls <= elapsed / 0.5 + 2, (sacct_calls, elapsed)
    assert SlurmJob.watcher.num_calls == watcher_calls


def test_check_accepts_the_cluster(cluster: Path, tmp_path: Path) -> None:
    Dispatcher(config("check-ok", cpus_per_child=1, mem_gb=1), tmp_path).check()


def test_reattach_to_unknown_job_is_not_started(cluster: Path, tmp_path: Path) -> None:
    dispatcher = Dispatcher(config("ghost"), tmp_path)
    dispatcher.reattach({"ghost": "987654", "ghost-task": "987654_3"})
    done = collect(dispatcher, 2, timeout=10)
    assert {c.result.status for c in done.values()} == {Status.NOT_STARTED}
    for key, job_id in (("ghost", "987654"), ("ghost-task", "987654_3")):
        assert done[key].job_id == job_id
        assert f"SLURM job {job_id} is unknown: not in sacct" in done[key].result.error


def _assert_nothing_submitted(dispatcher: Dispatcher, jobs_before: int) -> None:
    assert dispatcher.in_flight() == {}
    assert not list(dispatcher.folder.rglob("*_submitted.pkl"))
    assert len(sacct("-X", "-o", "JobID")) == jobs_before


def test_check_rejects_unknown_partition(cluster: Path, tmp_path: Path) -> None:
    before = len(sacct("-X", "-o", "JobID"))
    dispatcher = Dispatcher(config("bad-partition", partition="nope"), tmp_path)
    with pytest.raises(ClusterConfigError, match="partition 'nope' does not exist"):
        dispatcher.check()
    with pytest.raises(ClusterConfigError, match="at most 2|at most [0-9]+ CPUs"):
        Dispatcher(config("too-many-cpus", cpus_per_child=4096), tmp_path).check()
    _assert_nothing_submitted(dispatcher, before)


def test_check_rejects_missing_sbatch(cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(sacct("-X", "-o", "JobID"))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    dispatcher = Dispatcher(config("no-sbatch"), tmp_path / "jobs")
    with pytest.raises(ClusterConfigError, match="`sbatch` is not on PATH"):
        dispatcher.check()
    monkeypatch.undo()
    _assert_nothing_submitted(dispatcher, before)


def test_check_rejects_unreachable_controller(
    cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(sacct("-X", "-o", "JobID"))
    (port,) = free_ports(1)  # nothing listens there
    text = "\n".join(
        f"SlurmctldPort={port}" if line.startswith("SlurmctldPort=") else line
        for line in cluster.read_text().splitlines()
    )
    bad = tmp_path / "slurm.conf"
    bad.write_text(text + "\n")
    monkeypatch.setenv("SLURM_CONF", str(bad))
    dispatcher = Dispatcher(config("no-controller"), tmp_path / "jobs")
    with pytest.raises(ClusterConfigError, match="controller is not reachable"):
        dispatcher.check()  # within check's own command timeouts (pytest-timeout catches a hang)
    monkeypatch.undo()
    _assert_nothing_submitted(dispatcher, before)


DRIVER = """
import json, os, sys, time
from nas_env.evaluators import SyntheticEvaluator
from nas_env.spaces.cnn import CNNSpace
from slurm import Dispatcher, ExecutorConfig, Task
folder, mapping, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
space = CNNSpace(num_layers=3)
evaluator = SyntheticEvaluator(space, target_seed=9, epochs=3, seconds_per_epoch=1.0)
dispatcher = Dispatcher(ExecutorConfig.from_dict(config), folder)
dispatcher.check()
dispatcher.submit([Task(f"d{i}", evaluator, space.sample(200 + i)) for i in range(6)])
with open(mapping + ".tmp", "w") as f:
    json.dump(dispatcher.in_flight(), f)
os.replace(mapping + ".tmp", mapping)
while True:  # a search loop that would poll forever, until it is killed
    dispatcher.poll()
    time.sleep(0.2)
"""


def test_driver_killed_and_reattached(cluster: Path, tmp_path: Path) -> None:
    """The driver is SIGKILLed after submitting; a new driver reattaches and gets every result, once."""
    folder, mapping = tmp_path / "jobs", tmp_path / "in_flight.json"
    cfg = config("driver-restart")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(folder), str(mapping), json.dumps(cfg.to_dict())])
    try:
        deadline = time.monotonic() + 300  # a bound on a hang, not an expected duration
        while not mapping.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mapping.exists(), f"the driver did not write its mapping (rc {driver.poll()})"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
    pending = json.loads(mapping.read_text())
    assert len(pending) == 6

    dispatcher = Dispatcher(cfg, folder)
    dispatcher.reattach(pending)
    done = collect(dispatcher, 6, timeout=90)
    evaluator = SyntheticEvaluator(SPACE, target_seed=9, epochs=3)
    for i in range(6):
        c = done[f"d{i}"]
        assert c.result.status is Status.OK, c.result.error
        assert c.job_id == pending[f"d{i}"]
        assert c.result.reward == pytest.approx(evaluator.score(SPACE.encode(SPACE.sample(200 + i))))

    # nothing was submitted twice: SLURM knows exactly these 6 jobs under this job name, each ran once
    rows = settled("-X", "--name=driver-restart", "-o", "JobID,State", expected=len(pending))
    assert sorted(r[0] for r in rows) == sorted(pending.values())
    assert all(r[1] == "COMPLETED" for r in rows), rows
    duplicates = sacct("-X", "-D", "--name=driver-restart", "-o", "JobID,State")
    assert len(duplicates) == 6, duplicates
    assert len(list(folder.rglob("*_submission.sh"))) == 1  # one sbatch (one array) in all


def test_twin_of_a_running_array_task_steps_aside(cluster: Path, tmp_path: Path) -> None:
    """A task submitted again while its first job runs (its id lost with a killed driver) is not trained
    twice: the twin job finds the claim and the dispatcher collects the owner's result instead."""
    folder, log = tmp_path / "jobs", tmp_path / "trained.jsonl"
    evaluator = SyntheticEvaluator(SPACE, target_seed=10, epochs=4, seconds_per_epoch=0.5, log_path=log)
    (arch,) = archs(1, offset=300)
    (owner_id,) = Dispatcher(config("twin"), folder).submit([Task("twin", evaluator, arch)])
    dispatcher = Dispatcher(config("twin"), folder)
    deadline = time.monotonic() + 300  # a bound on a hang, not an expected duration
    while dispatcher.claimed("twin") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dispatcher.claimed("twin") == owner_id  # the array task id, as submitit gives it
    (twin_id,) = dispatcher.submit([Task("twin", evaluator, arch)])
    done = collect(dispatcher, 1, timeout=90)["twin"]
    assert done.result.ok, done.result.error
    assert done.job_id == owner_id != twin_id
    assert done.result.reward == pytest.approx(evaluator.score(SPACE.encode(arch)))
    rows = settled("-X", "--name=twin", "-o", "JobID,State", expected=2)
    assert sorted(r[0] for r in rows) == sorted([owner_id, twin_id]) and all(r[1] == "COMPLETED" for r in rows)
    assert [json.loads(line)["key"] for line in log.read_text().splitlines()] == [SPACE.key(arch)]


@pytest.mark.parametrize(
    ("overrides", "scheduler_says"),
    [
        ({"partition": "nope"}, "Invalid partition name specified"),
        ({"mem_gb": 100_000}, "Requested node configuration is not available"),
        ({"gpus_per_child": 1}, "Invalid generic resource (gres) specification"),
    ],
    ids=["unknown-partition", "memory-over-the-node", "gpus-on-a-node-without"],
)
def test_a_batch_the_scheduler_refuses_is_not_started(
    cluster: Path, tmp_path: Path, overrides: dict, scheduler_says: str
) -> None:
    """No check() first: sbatch itself refuses the array, and every task of it ends NOT_STARTED with
    sbatch's message; nothing reaches the scheduler."""
    before = len(sacct("-X", "-o", "JobID"))
    evaluator = SyntheticEvaluator(SPACE, target_seed=11, epochs=1, failure_reward=-4.0)
    dispatcher = Dispatcher(config("refused", **overrides), tmp_path / "jobs")
    ids = dispatcher.submit([Task(f"r{i}", evaluator, a) for i, a in enumerate(archs(2, offset=400))])
    if ids:  # accepted after all: do not leave jobs pending for the rest of the session
        dispatcher.close(cancel=True)
    assert ids == []
    done = collect(dispatcher, 2, timeout=60)
    for c in done.values():
        assert c.result.status is Status.NOT_STARTED and c.result.reward == -4.0 and c.job_id is None
        assert "sbatch refused the batch" in c.result.error and scheduler_says in c.result.error, c.result.error
    assert dispatcher.in_flight() == {} and len(sacct("-X", "-o", "JobID")) == before


@pytest.mark.slow
def test_a_job_over_its_time_limit_is_timeout(cluster: Path, tmp_path: Path) -> None:
    """Two children that would train for hours, under a one-minute limit and no requeue: one gets
    submitit's warning signal and gives up (timed out too many times), the other ignores it and SLURM
    kills it at the limit (state TIMEOUT, no result file). Both end TIMEOUT."""

    class IgnoresTheWarningSignal(SyntheticEvaluator):  # local: cloudpickle ships it to the job by value
        """A child that never reacts to the time-limit warning (as one stuck in native code would)."""

        def evaluate(self, arch, checkpoint_path=None):
            import signal

            from submitit.slurm.slurm import SlurmJobEnvironment

            signal.signal(getattr(signal, f"SIG{SlurmJobEnvironment.USR_SIG}"), signal.SIG_IGN)
            return super().evaluate(arch, checkpoint_path)

    arch_a, arch_b = archs(2, offset=500)
    endless = SyntheticEvaluator(SPACE, target_seed=12, epochs=100_000, seconds_per_epoch=0.5, failure_reward=-3.0)
    stubborn = IgnoresTheWarningSignal(
        SPACE, target_seed=12, epochs=100_000, seconds_per_epoch=0.5, failure_reward=-3.0
    )
    dispatcher = Dispatcher(config("time-limit", time_limit_min=1, max_requeues=0), tmp_path / "jobs")
    dispatcher.check()
    ids = dispatcher.submit([Task("warned", endless, arch_a), Task("stubborn", stubborn, arch_b)])
    done = collect(dispatcher, 2, timeout=400)
    for key in ("warned", "stubborn"):
        result = done[key].result
        assert result.status is Status.TIMEOUT, result
        assert result.reward == -3.0
    assert "SLURM state TIMEOUT" in done["stubborn"].result.error
    rows = {r[0]: r[1] for r in settled("-X", "-j", ",".join(ids), "-o", "JobID,State", expected=2)}
    assert rows[ids[1]] == "TIMEOUT", rows


def test_a_job_preempted_without_requeue_is_preempted(
    cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job of the urgent partition needs the whole node: SLURM preempts (cancels) the running child,
    which is not requeued and ends PREEMPTED."""
    monkeypatch.setattr(slurm_backend, "PREEMPT_GRACE_S", 3.0)  # how long a requeue may take to show
    endless = SyntheticEvaluator(SPACE, target_seed=13, epochs=100_000, seconds_per_epoch=0.5, failure_reward=-2.0)
    (arch,) = archs(1, offset=600)
    dispatcher = Dispatcher(config("preempted", cpus_per_child=1), tmp_path / "jobs")
    dispatcher.check()
    (job_id,) = dispatcher.submit([Task("victim", endless, arch)])
    wait_for_epoch(checkpoint_path(dispatcher.folder, "victim"), 1)
    (cpus,) = {int(c) for c in node_cpus()}
    urgent = subprocess.run(
        ["sbatch", "--parsable", "-p", URGENT_PARTITION, "-c", str(cpus), "-J", "urgent", "--wrap", "true"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    try:
        done = collect(dispatcher, 1, timeout=300)["victim"]
    finally:
        subprocess.run(["scancel", urgent], check=False, timeout=30)
    assert done.result.status is Status.PREEMPTED, done.result
    assert done.result.reward == -2.0 and "SLURM state PREEMPTED" in done.result.error
    history = [r[1] for r in sacct("-X", "-D", "-j", job_id, "-o", "JobID,State")]
    assert history == ["PREEMPTED"], history  # preempted once, never requeued


def node_cpus() -> list[str]:
    """The CPU count of the node (one line per partition of it)."""
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split()


def test_failing_sacct_calls_do_not_stop_the_collection(
    cluster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sacct fails (exit 1) for a while: the dispatcher keeps polling, reports nothing it cannot know (a
    cancelled job has no result file, only a state), and collects once sacct answers again."""
    folder, flag = tmp_path / "bin", tmp_path / "sacct-fails"
    real = shutil.which("sacct")
    assert real is not None
    folder.mkdir()
    (folder / "sacct").write_text(
        f'#!/bin/sh\nif [ -e "{flag}" ]; then echo x >> "{folder}/failed"; '
        f'echo "sacct: error: injected failure" >&2; exit 1; fi\nexec "{real}" "$@"\n'
    )
    (folder / "sacct").chmod(0o755)
    endless = SyntheticEvaluator(SPACE, target_seed=14, epochs=100_000, seconds_per_epoch=0.5, failure_reward=-1.0)
    quick = SyntheticEvaluator(SPACE, target_seed=14, epochs=1, seconds_per_epoch=0.0)
    victim_arch, quick_arch = archs(2, offset=700)
    dispatcher = Dispatcher(config("sacct-fails"), tmp_path / "jobs")
    ids = dispatcher.submit([Task("victim", endless, victim_arch), Task("quick", quick, quick_arch)])
    wait_for_epoch(checkpoint_path(dispatcher.folder, "victim"), 1)
    subprocess.run(["scancel", ids[0]], check=True, timeout=30)
    settled("-X", "-j", ids[0], "-o", "JobID,State", expected=1)  # SLURM knows it is cancelled
    # from now on the dispatcher's sacct fails; it has not queried SLURM before
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    flag.touch()
    failed = folder / "failed"
    done: dict = {}
    deadline = time.monotonic() + 300  # a bound on a hang, not an expected duration
    while not failed.exists() or len(failed.read_text().split()) < 3:  # three failed sacct calls
        assert time.monotonic() < deadline, "the dispatcher stopped querying sacct"
        done.update((c.key, c) for c in dispatcher.wait(timeout=1))
    assert "victim" not in done  # no state, no result file: nothing to report yet
    flag.unlink()
    done.update(collect(dispatcher, 2 - len(done), timeout=120))
    assert done["victim"].result.status is Status.CANCELLED and done["victim"].result.reward == -1.0
    assert done["quick"].result.ok, done["quick"].result.error
