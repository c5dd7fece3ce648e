"""The Dispatcher on the ``local`` (subprocesses) and ``inline`` executors: no SLURM needed.

Children are SyntheticEvaluator evaluations that sleep a little per "epoch", so the tests exercise
real job processes, files and signals in a few seconds each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from local_slurm import collect_completed as collect, distinct_architectures

from nas_env.evaluators import SyntheticEvaluator
from nas_env.results import Status
from nas_env.spaces.cnn import CNNSpace
from slurm import ClusterConfigError, Completed, Dispatcher, ExecutorConfig, Task, checkpoint_path
from slurm.job import EvaluateTask, claim_path
from slurm.local_backend import LocalBackend
from slurm import faults
from slurm.check import parse_time_limit
from slurm.claims import SETTLED, claim_task, claimed_by, clear_settled_claim, read_claim, settle_claim
from slurm.local_backend import controller_alive

EXECUTORS = ["local", "inline"]
SPACE = CNNSpace(num_layers=3)


def archs(n: int, offset: int = 0) -> list:
    """``n`` architectures of SPACE with distinct keys (seeded)."""
    return distinct_architectures(SPACE, n, offset)


def expected_reward(evaluator: SyntheticEvaluator, arch) -> float:
    return evaluator.score(SPACE.encode(arch))




def job_pickles(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*_submitted.pkl"))


def trained_keys(log: Path) -> list[str]:
    return [json.loads(line)["key"] for line in log.read_text().splitlines()] if log.exists() else []


def wait_for_file(path: Path, timeout: float = 300) -> None:
    """Wait until ``path`` exists (``timeout`` only bounds a hang; it is not the expected time)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def wait_until_ended(job_ids: list[str], timeout: float = 300) -> None:
    pids = [int(job_id.rsplit("-", 1)[1]) for job_id in job_ids]
    deadline = time.monotonic() + timeout
    while any(controller_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(controller_alive(pid) for pid in pids), "a job process did not end"


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    return request.param


def make(executor: str, folder: Path, **overrides) -> Dispatcher:
    config = ExecutorConfig(**{"executor": executor, "poll_interval_s": 0.2, "time_limit_min": 5, **overrides})
    dispatcher = Dispatcher(config, folder)
    dispatcher.check()
    return dispatcher


def test_batch_completes_with_correct_rewards(executor: str, tmp_path: Path) -> None:
    evaluator = SyntheticEvaluator(SPACE, target_seed=3, epochs=2, seconds_per_epoch=0.05)
    children = archs(8)
    dispatcher = make(executor, tmp_path, max_in_flight=8)
    tasks = [Task(f"child-{i}", evaluator, arch) for i, arch in enumerate(children)]
    ids = dispatcher.submit(tasks)
    assert len(ids) == 8 and len(set(ids)) == 8
    assert dispatcher.in_flight() == {t.key: i for t, i in zip(tasks, ids)}
    assert dispatcher.capacity() == 0

    done = collect(dispatcher, 8)
    for i, arch in enumerate(children):
        c = done[f"child-{i}"]
        assert c.result.status is Status.OK, c.result.error
        assert c.result.reward == pytest.approx(expected_reward(evaluator, arch))
        assert c.job_id == ids[i] == c.result.job_id
        assert len(c.result.curve) == 2
        assert not checkpoint_path(dispatcher.folder, c.key).exists()  # cleaned after success
    assert dispatcher.in_flight() == {} and dispatcher.capacity() == 8
    assert dispatcher.poll() == []


def test_raising_child_is_failed_with_traceback(executor: str, tmp_path: Path) -> None:
    children = archs(3)
    evaluator = SyntheticEvaluator(
        SPACE, target_seed=1, epochs=1, seconds_per_epoch=0.0, fail_keys=[SPACE.key(children[1])], failure_reward=-1.0
    )
    dispatcher = make(executor, tmp_path)
    dispatcher.submit([Task(f"c{i}", evaluator, a) for i, a in enumerate(children)])
    done = collect(dispatcher, 3)
    bad = done["c1"].result
    assert bad.status is Status.FAILED
    assert bad.reward == -1.0
    assert "Traceback" in bad.error and "RuntimeError: injected failure" in bad.error
    assert done["c0"].result.ok and done["c2"].result.ok


def test_a_child_out_of_memory_is_oom(executor: str, tmp_path: Path) -> None:
    """A child that runs out of memory inside the job (CUDA's OutOfMemoryError, or a real MemoryError from
    an allocation that cannot succeed) ends OOM with the traceback; its siblings are unaffected."""

    class OutOfMemory(SyntheticEvaluator):  # a local class: cloudpickle ships it to the job by value
        def __init__(self, kind: str) -> None:
            super().__init__(SPACE, target_seed=0, epochs=1, failure_reward=-0.25)
            self.kind = kind

        def evaluate(self, arch, checkpoint_path=None):
            if self.kind == "cuda":
                import torch

                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            if self.kind == "host":
                bytearray(1 << 62)  # 4 EiB: the allocation fails with MemoryError
            return super().evaluate(arch, checkpoint_path)

    children = archs(3, offset=60)
    dispatcher = make(executor, tmp_path)
    kinds = ["cuda", "host", "none"]
    dispatcher.submit([Task(kind, OutOfMemory(kind), arch) for kind, arch in zip(kinds, children)])
    done = collect(dispatcher, 3)
    for kind, marker in (("cuda", "OutOfMemoryError: CUDA out of memory"), ("host", "MemoryError")):
        result = done[kind].result
        assert result.status is Status.OOM, result
        assert result.reward == -0.25 and marker in result.error and "Traceback" in result.error
    assert done["none"].result.ok, done["none"].result.error


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_result_pickle_that_will_not_load_is_failed(damage: str, tmp_path: Path) -> None:
    """The result pickle of a finished job is damaged before the dispatcher reads it: that task ends
    FAILED naming its job, poll() does not raise, and the other task of the batch is collected as usual."""
    evaluator = SyntheticEvaluator(SPACE, target_seed=2, epochs=1, failure_reward=-0.5)
    dispatcher = make("local", tmp_path / "jobs")
    ids = dispatcher.submit([Task(f"t{i}", evaluator, a) for i, a in enumerate(archs(2, offset=70))])
    backend = LocalBackend(dispatcher.config, dispatcher.folder)
    pickles = [backend._paths(job_id).result_pickle for job_id in ids]
    for path in pickles:  # both jobs have finished (written by rename: complete); nothing polled yet
        wait_for_file(path)
    data = pickles[0].read_bytes()
    pickles[0].write_bytes({"garbage": b"not a pickle at all", "truncated": data[: len(data) // 2], "empty": b""}[damage])
    done = collect(dispatcher, 2)
    bad = done["t0"].result
    assert bad.status is Status.FAILED and bad.reward == -0.5 and bad.job_id == ids[0]
    assert ids[0] in bad.error
    assert done["t1"].result.ok and done["t1"].job_id == ids[1]


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """The test runs as a driver started in the background (``cmd &``, ``nohup``): SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_cancel_local_job(tmp_path: Path, sigint_ignored: None) -> None:
    # waits on events only (the checkpoint file, the results), so a busy machine makes it slower, not red:
    # the child cannot finish on its own (it would train for hours), so its CANCELLED comes from the cancel.
    # The driver ignores SIGINT (started in the background), which its job controllers must not inherit
    log = tmp_path / "trained.jsonl"
    evaluator = SyntheticEvaluator(SPACE, target_seed=0, epochs=100_000, seconds_per_epoch=0.1, log_path=log)
    quick = SyntheticEvaluator(SPACE, target_seed=0, epochs=1, seconds_per_epoch=0.0, log_path=log)
    slow_arch, quick_arch = archs(2)
    dispatcher = make("local", tmp_path / "jobs")
    dispatcher.submit([Task("slow", evaluator, slow_arch), Task("quick", quick, quick_arch)])
    wait_for_file(checkpoint_path(dispatcher.folder, "slow"))  # running and training
    pid = int(dispatcher.in_flight()["slow"].rsplit("-", 1)[1])
    assert controller_alive(pid)
    dispatcher.cancel("slow")
    done = collect(dispatcher, 2, timeout=300)  # a bound on a hang, not an expected duration
    assert done["slow"].result.status is Status.CANCELLED, done["slow"].result
    assert done["slow"].result.reward == evaluator.failure_reward
    assert done["quick"].result.ok, done["quick"].result.error
    assert not controller_alive(pid)
    assert trained_keys(log) == [SPACE.key(quick_arch)]  # the cancelled child never finished
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the driver's own disposition is left as it was
    with pytest.raises(KeyError):
        dispatcher.cancel("slow")  # no longer in flight


def test_check_names_slurm_conf_first_and_missing_tools_without_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slurm executor's check() without any SLURM program on PATH (as on a machine without SLURM)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    missing = tmp_path / "missing.conf"
    monkeypatch.setenv("SLURM_CONF", str(missing))
    dispatcher = Dispatcher(ExecutorConfig(executor="slurm"), tmp_path / "jobs")
    with pytest.raises(ClusterConfigError, match=f"SLURM_CONF={missing} is not a file"):
        dispatcher.check()
    monkeypatch.delenv("SLURM_CONF")
    with pytest.raises(ClusterConfigError, match="`sbatch` is not on PATH"):
        dispatcher.check()
    assert dispatcher.in_flight() == {} and job_pickles(tmp_path) == []


def test_max_in_flight_is_respected(executor: str, tmp_path: Path) -> None:
    evaluator = SyntheticEvaluator(SPACE, target_seed=2, epochs=2, seconds_per_epoch=0.05)
    children = archs(6)
    dispatcher = make(executor, tmp_path, max_in_flight=3)
    with pytest.raises(ValueError, match="capacity"):
        dispatcher.submit([Task(f"x{i}", evaluator, a) for i, a in enumerate(children[:4])])
    assert dispatcher.in_flight() == {} and job_pickles(tmp_path) == []

    queue = [Task(f"x{i}", evaluator, a) for i, a in enumerate(children)]
    done: dict[str, Completed] = {}
    most = 0
    deadline = time.monotonic() + 300  # a bound on a hang, not an expected duration
    while len(done) < len(children) and time.monotonic() < deadline:
        n = dispatcher.capacity()
        if queue and n:
            batch, queue = queue[:n], queue[n:]
            dispatcher.submit(batch)
        most = max(most, len(dispatcher.in_flight()))
        assert dispatcher.capacity() == 3 - len(dispatcher.in_flight())
        if queue:
            with pytest.raises(ValueError):
                dispatcher.submit(queue[: dispatcher.capacity() + 1])
        done.update((c.key, c) for c in dispatcher.wait(timeout=10))
    assert len(done) == 6 and all(c.result.ok for c in done.values())
    assert most == 3
    assert len(job_pickles(tmp_path)) == 6  # each child submitted exactly once


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    evaluator = SyntheticEvaluator(SPACE, target_seed=0, epochs=1)
    a, b = archs(2)
    dispatcher = make("inline", tmp_path)
    with pytest.raises(ValueError, match="already in flight or repeated"):
        dispatcher.submit([Task("same", evaluator, a), Task("same", evaluator, b)])
    dispatcher.submit([Task("same", evaluator, a)])
    with pytest.raises(ValueError, match="already in flight"):
        dispatcher.submit([Task("same", evaluator, b)])


def test_reattach_collects_without_resubmitting(executor: str, tmp_path: Path) -> None:
    evaluator = SyntheticEvaluator(SPACE, target_seed=4, epochs=3, seconds_per_epoch=0.1)
    children = archs(5)
    first = make(executor, tmp_path, max_in_flight=5)
    ids = first.submit([Task(f"r{i}", evaluator, a) for i, a in enumerate(children)])
    pending = first.in_flight()
    assert sorted(pending.values()) == sorted(ids)
    pickles = job_pickles(tmp_path)
    del first  # the driver goes away without cancelling anything

    second = Dispatcher(ExecutorConfig(executor=executor, poll_interval_s=0.2), tmp_path)
    second.reattach(pending)
    assert second.in_flight() == pending
    done = collect(second, 5)
    assert {k: c.job_id for k, c in done.items()} == pending
    for i, arch in enumerate(children):
        assert done[f"r{i}"].result.ok
        assert done[f"r{i}"].result.reward == pytest.approx(expected_reward(evaluator, arch))
    assert job_pickles(tmp_path) == pickles  # nothing was submitted again


def test_reattach_unknown_job_is_not_started(executor: str, tmp_path: Path) -> None:
    dispatcher = make(executor, tmp_path)
    bogus = "deadbeef-4194999" if executor == "local" else "inline-000000000000"
    dispatcher.reattach({"ghost": bogus, "malformed": "no-such-id-x"})
    done = collect(dispatcher, 2, timeout=10)
    assert {c.result.status for c in done.values()} == {Status.NOT_STARTED}
    assert done["ghost"].job_id == bogus


DRIVER = """
import json, sys, time
from nas_env.evaluators import SyntheticEvaluator
from nas_env.spaces.cnn import CNNSpace
from slurm import Dispatcher, ExecutorConfig, Task
space = CNNSpace(num_layers=3)
evaluator = SyntheticEvaluator(space, target_seed=5, epochs=4, seconds_per_epoch=0.5)
folder, mapping = sys.argv[1], sys.argv[2]
dispatcher = Dispatcher(ExecutorConfig(executor="local", max_in_flight=4), folder)
dispatcher.submit([Task(f"d{i}", evaluator, space.sample(100 + i)) for i in range(4)])
with open(mapping + ".tmp", "w") as f:
    json.dump(dispatcher.in_flight(), f)
import os; os.replace(mapping + ".tmp", mapping)
time.sleep(600)
"""


def test_local_jobs_survive_a_killed_driver(tmp_path: Path) -> None:
    folder, mapping = tmp_path / "jobs", tmp_path / "in_flight.json"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(folder), str(mapping)])
    try:
        deadline = time.monotonic() + 300  # a bound on a hang, not an expected duration
        while not mapping.exists() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert mapping.exists(), "the driver did not write its in-flight mapping"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
    pending = json.loads(mapping.read_text())
    pids = [int(job_id.rsplit("-", 1)[1]) for job_id in pending.values()]
    assert any(controller_alive(pid) for pid in pids), "the job processes died with the driver"

    dispatcher = Dispatcher(ExecutorConfig(executor="local", poll_interval_s=0.2), folder)
    dispatcher.reattach(pending)
    done = collect(dispatcher, 4)
    evaluator = SyntheticEvaluator(SPACE, target_seed=5, epochs=4)
    for i in range(4):
        c = done[f"d{i}"]
        assert c.result.ok, c.result.error
        assert c.job_id == pending[f"d{i}"]
        assert c.result.reward == pytest.approx(expected_reward(evaluator, SPACE.sample(100 + i)))
    assert len(job_pickles(folder)) == 4


def test_a_task_submitted_again_after_its_job_id_was_lost_is_trained_once(tmp_path: Path) -> None:
    """A driver that dies between submitting and recording the job ids leaves unknown jobs; submitting
    their tasks again must not train them twice (the twin finds the claim and the dispatcher follows it)."""
    log, folder = tmp_path / "trained.jsonl", tmp_path / "jobs"
    evaluator = SyntheticEvaluator(SPACE, target_seed=6, epochs=4, seconds_per_epoch=0.4, log_path=log)
    raced, claimed = archs(2)
    lost = make("local", folder, max_in_flight=2)
    orphan_ids = lost.submit([Task("raced", evaluator, raced), Task("claimed", evaluator, claimed)])
    del lost  # the ids are never recorded

    dispatcher = make("local", folder, max_in_flight=2)
    # "raced": submitted again at once, while the orphan may not have started yet
    (twin_id,) = dispatcher.submit([Task("raced", evaluator, raced)])
    # "claimed": the orphan has started and owns the task (a restarted search reattaches to it); a twin
    # submitted anyway steps aside, and the dispatcher follows the owner
    deadline = time.monotonic() + 300  # a bound on a hang, not an expected duration
    while dispatcher.claimed("claimed") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dispatcher.claimed("claimed") == orphan_ids[1]
    (claimed_twin_id,) = dispatcher.submit([Task("claimed", evaluator, claimed)])

    done = collect(dispatcher, 2)
    for key, arch in (("raced", raced), ("claimed", claimed)):
        assert done[key].result.ok, done[key].result.error
        assert done[key].result.reward == pytest.approx(expected_reward(evaluator, arch))
    assert done["raced"].job_id in (orphan_ids[0], twin_id)
    assert done["claimed"].job_id == orphan_ids[1]
    # collected: the claims stay as tombstones of the jobs that trained
    for key in ("raced", "claimed"):
        assert dispatcher.claimed(key) == done[key].job_id
        assert read_claim(claim_path(folder, key))[SETTLED] == "ok"
    wait_until_ended(orphan_ids + [twin_id, claimed_twin_id])
    assert sorted(trained_keys(log)) == sorted([SPACE.key(raced), SPACE.key(claimed)])


def start_orphan_job(folder: Path, key: str, evaluator, arch) -> str:
    """Start a job for ``key`` the way a lost driver's submission would start late: straight through the
    backend, so no dispatcher clears or knows anything; returns its job id."""
    backend = LocalBackend(ExecutorConfig(executor="local", time_limit_min=5), folder.absolute())
    function = EvaluateTask(key, evaluator, arch, str(checkpoint_path(folder, key)), str(claim_path(folder, key)))
    ((job_id, _),) = backend.submit([function])
    return job_id


def test_a_twin_starting_after_the_result_was_collected_does_not_train(tmp_path: Path) -> None:
    """The claim of a collected task stays as a tombstone: a twin job that starts afterwards (submitted
    by a driver that died before recording it) returns at once instead of training the task again."""
    log, folder = tmp_path / "trained.jsonl", tmp_path / "jobs"
    evaluator = SyntheticEvaluator(SPACE, target_seed=8, epochs=2, seconds_per_epoch=0.1, log_path=log)
    (arch,) = archs(1, offset=40)
    dispatcher = make("local", folder)
    (owner_id,) = dispatcher.submit([Task("late", evaluator, arch)])
    first = collect(dispatcher, 1)["late"]
    assert first.result.ok and first.job_id == owner_id
    assert trained_keys(log) == [SPACE.key(arch)]
    assert dispatcher.claimed("late") == owner_id  # kept after the collect, settled
    assert read_claim(claim_path(folder, "late"))[SETTLED] == "ok"

    orphan_id = start_orphan_job(folder, "late", evaluator, arch)
    wait_until_ended([orphan_id])
    orphan_paths = LocalBackend(ExecutorConfig(executor="local"), folder.absolute())._paths(orphan_id)
    kind, value = faults.read_outcome(orphan_paths.result_pickle)
    assert kind == "success" and value.status is Status.NOT_STARTED, value
    assert claimed_by(value) is not None and claimed_by(value)["job_id"] == owner_id.rsplit("-", 1)[1]
    assert trained_keys(log) == [SPACE.key(arch)]  # the twin trained nothing
    assert not checkpoint_path(folder, "late").exists()

    # a driver watching the twin follows the tombstone to the owner and gets the owner's result
    watcher = Dispatcher(ExecutorConfig(executor="local", poll_interval_s=0.2), folder)
    watcher.reattach({"late": orphan_id})
    again = collect(watcher, 1)["late"]
    assert again.job_id == owner_id and again.result.ok
    assert again.result.reward == pytest.approx(first.result.reward)
    assert trained_keys(log) == [SPACE.key(arch)]


def test_a_deliberate_resubmission_after_an_uncacheable_result_trains(tmp_path: Path) -> None:
    """A key submitted again after a result that is not cacheable (here: cancelled while training) runs:
    submit() clears the tombstone of the earlier attempt; a late twin of either attempt still trains nothing."""
    log, folder = tmp_path / "trained.jsonl", tmp_path / "jobs"
    endless = SyntheticEvaluator(SPACE, target_seed=8, epochs=100_000, seconds_per_epoch=0.05, log_path=log)
    quick = SyntheticEvaluator(SPACE, target_seed=8, epochs=2, seconds_per_epoch=0.05, log_path=log)
    (arch,) = archs(1, offset=50)
    dispatcher = make("local", folder)
    (first_id,) = dispatcher.submit([Task("again", endless, arch)])
    wait_for_file(checkpoint_path(folder, "again"))  # the job has claimed the task and trains
    dispatcher.cancel("again")
    cancelled = collect(dispatcher, 1)["again"]
    assert cancelled.result.status is Status.CANCELLED and cancelled.job_id == first_id
    assert read_claim(claim_path(folder, "again"))[SETTLED] == "cancelled"
    assert dispatcher.claimed("again") == first_id

    (second_id,) = dispatcher.submit([Task("again", quick, arch)])
    done = collect(dispatcher, 1)["again"]
    assert done.result.ok, done.result.error
    assert done.job_id == second_id != first_id
    assert done.result.reward == pytest.approx(expected_reward(quick, arch))
    assert done.result.extra["resumed_from_epoch"] >= 1  # resumed from the cancelled attempt's checkpoint
    assert trained_keys(log) == [SPACE.key(arch)]  # trained by the new attempt (the first never finished)
    assert dispatcher.claimed("again") == second_id
    assert read_claim(claim_path(folder, "again"))[SETTLED] == "ok"

    wait_until_ended([start_orphan_job(folder, "again", quick, arch)])
    assert trained_keys(log) == [SPACE.key(arch)]


def test_claims_are_atomic_kept_by_a_requeued_job_and_taken_over_when_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "claims" / "task.json"
    first, second = {"job_id": "11_0", "folder": "f"}, {"job_id": "12_0", "folder": "f"}
    assert claim_task(path, first) is None
    assert claim_task(path, first) is None  # the same job again (requeued): still its own
    assert claim_task(path, second) == first
    assert read_claim(path) == first and not list(path.parent.glob(".*"))  # no files left aside
    assert clear_settled_claim(path) is None and read_claim(path) == first  # a live claim is never cleared
    assert not settle_claim(path, second, "ok") and read_claim(path) == first  # not the owner's: unchanged
    assert settle_claim(path, first, "timeout") and read_claim(path) == {**first, SETTLED: "timeout"}
    assert claim_task(path, second) == {**first, SETTLED: "timeout"}  # a tombstone still turns twins away
    assert clear_settled_claim(path) == {**first, SETTLED: "timeout"} and read_claim(path) is None
    assert claim_task(path, second) is None and read_claim(path) == second  # a new attempt claims afresh
    path.write_text("{not json")
    assert claim_task(path, first) is None and read_claim(path) == first
    assert not list(path.parent.glob(".*"))


def test_scheduler_calls_are_bounded_per_poll_interval(executor: str, tmp_path: Path) -> None:
    # inline runs everything inside submit(): its first poll collects all, so no sleeping there
    evaluator = SyntheticEvaluator(SPACE, target_seed=0, epochs=3, seconds_per_epoch=0.3 if executor == "local" else 0)
    interval = 0.25
    dispatcher = make(executor, tmp_path, max_in_flight=8, poll_interval_s=interval)
    dispatcher.submit([Task(f"p{i}", evaluator, a) for i, a in enumerate(archs(8))])
    queries: list[tuple[float, int]] = []  # (when, how many jobs) of every real status query
    backend_refresh = dispatcher._backend.refresh

    def recording_refresh(records):
        queries.append((time.monotonic(), len(records)))
        return backend_refresh(records)

    dispatcher._backend.refresh = recording_refresh
    polls, done = 0, {}
    start = time.monotonic()
    while len(done) < 8 and time.monotonic() - start < 300:
        done.update((c.key, c) for c in dispatcher.poll())  # a busy loop: thousands of polls
        polls += 1
    assert len(done) == 8
    if executor == "inline":
        assert len(queries) == 1 and queries[0][1] == 8  # one query collected all eight
    else:
        assert polls > 10 * len(queries)  # most polls made no query at all
        assert any(n > 1 for _, n in queries)  # one query covers every job in flight
        gaps = [b - a for (a, _), (b, _) in zip(queries, queries[1:])]
        assert all(gap >= interval * 0.99 for gap in gaps), gaps  # never two queries within one interval


def test_executor_config_files_and_flags(tmp_path: Path) -> None:
    config = ExecutorConfig(
        executor="slurm", partition="gpu", gpus_per_child=1, mem_gb=16, extra_sbatch={"constraint": "a100"}
    )
    (tmp_path / "c.json").write_text(json.dumps(config.to_dict()))
    assert ExecutorConfig.from_file(tmp_path / "c.json") == config
    (tmp_path / "c.toml").write_text(
        '[executor]\nexecutor = "slurm"\npartition = "gpu"\ngpus_per_child = 1\nmem_gb = 16\n'
        '[executor.extra_sbatch]\nconstraint = "a100"\n'
    )
    assert ExecutorConfig.from_file(tmp_path / "c.toml") == config
    (tmp_path / "bad.toml").write_text('executor = "slurm"\npartiton = "gpu"\n')
    with pytest.raises(ValueError, match="partiton"):
        ExecutorConfig.from_file(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="unknown executor"):
        ExecutorConfig(executor="debug")

    import argparse

    parser = argparse.ArgumentParser()
    ExecutorConfig.add_arguments(parser)
    flags = ["--executor-config", str(tmp_path / "c.toml"), "--max-in-flight", "2", "--sbatch", "exclusive=user"]
    expected = config.replace(max_in_flight=2, extra_sbatch={"constraint": "a100", "exclusive": "user"})
    assert ExecutorConfig.from_args(parser.parse_args(flags)) == expected



@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("CANCELLED by 0", Status.CANCELLED),
        ("TIMEOUT", Status.TIMEOUT),
        ("OUT_OF_MEMORY", Status.OOM),
        ("NODE_FAIL", Status.FAILED),
        ("FAILED", Status.FAILED),
        ("BOOT_FAIL", Status.NOT_STARTED),
        ("PREEMPTED", Status.PREEMPTED),
    ],
)
def test_final_slurm_states_map_to_statuses(state: str, status: Status) -> None:
    result = faults.from_state(state, failure_reward=-0.5, job_id="7_1", exit_code="0:9", reason="None")
    assert result.status is status and result.reward == -0.5 and result.job_id == "7_1"
    assert state in result.error
    assert not faults.is_active(state)
    assert all(faults.is_active(s) for s in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"))


def test_tracebacks_map_to_statuses() -> None:
    assert faults.status_from_traceback("torch.OutOfMemoryError: CUDA out of memory.") is Status.OOM
    timed_out = "UncompletedJobError: Job not requeued because: timed-out too many times."
    assert faults.status_from_traceback(timed_out) is Status.TIMEOUT
    assert faults.status_from_traceback("ValueError: bad") is Status.FAILED
    assert parse_time_limit("infinite") is None
    assert parse_time_limit("1-02:03:00") == 24 * 60 + 2 * 60 + 3
    assert parse_time_limit("30:00") == 30


def test_sacct_output_is_read_per_array_task() -> None:
    """The rows of one batched sacct call (format of SLURM 22.05) give every array task its state."""
    from slurm.slurm_backend import SacctWatcher

    out = (
        "JobID|State|ExitCode|Reason\n"
        "12_3|FAILED|0:125|None\n12_3.batch|FAILED|0:125|\n12_3.0|OUT_OF_MEMORY|0:125|\n"
        "12_[4-6%2]|PENDING|0:0|None\n12_1|CANCELLED by 0|0:0|None\n13|RUNNING|0:0|None\n"
    )
    states = {k: v["State"] for k, v in SacctWatcher().read_info(out).items()}
    assert states == {
        "12_3": "OUT_OF_MEMORY",  # the OOM kill shows on the step row only
        "12_4": "PENDING", "12_5": "PENDING", "12_6": "PENDING",
        "12_1": "CANCELLED by 0",
        "13": "RUNNING",
    }  # fmt: skip


def test_the_documented_cluster_config_file_parses() -> None:
    from pathlib import Path

    config = ExecutorConfig.from_file(Path(__file__).resolve().parents[1] / "docs" / "cluster.toml")
    assert config.executor == "slurm" and config.max_in_flight == 800 and config.gpus_per_child == 1
    assert config.extra_sbatch == {"constraint": "a100"}
