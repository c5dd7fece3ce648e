"""The sqlite result store: keys, dedup, proposals bookkeeping, and survival of a killed writer."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nas_env.results import EvalResult, Status, failure
from nas_env.store import ProposalRecord, ResultStore, StoreError


def _ok(reward: float) -> EvalResult:
    return EvalResult(Status.OK, reward=reward, metric=reward, curve=(reward,), params=10, flops=20)


def test_results_are_keyed_by_architecture_and_evaluator(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        first = store.put("arch-a", "budget-1", "cnn", "{}", _ok(0.5))
        store.put("arch-a", "budget-2", "cnn", "{}", _ok(0.7))
        assert store.get("arch-a", "budget-1").reward == 0.5
        assert store.get("arch-a", "budget-2").reward == 0.7
        assert store.get("arch-b", "budget-1") is None
        # a repeat replaces, never duplicates: the same row, now holding the new value
        assert store.put("arch-a", "budget-1", "cnn", "{}", _ok(0.6)) == first
        assert store.get("arch-a", "budget-1") == _ok(0.6)
        assert store.get("arch-a", "budget-2").reward == 0.7
        assert store.count() == 2
        assert [(e.arch_key, e.fingerprint, e.result.reward) for e in store.evaluations()] == [
            ("arch-a", "budget-1", 0.6), ("arch-a", "budget-2", 0.7)]
        assert [e.result.reward for e in store.best(1)] == [0.7]


def test_only_reproducible_outcomes_are_served_from_cache(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.put("a", "f", "cnn", "{}", failure(Status.DIVERGED, "nan loss"))
        store.put("b", "f", "cnn", "{}", failure(Status.CANCELLED, "scancel"))
        assert store.get_cached("a", "f").status is Status.DIVERGED
        assert store.get_cached("b", "f") is None  # the cluster's doing: evaluate again
        assert store.get("b", "f").error == "scancel"


def test_results_round_trip_every_field(tmp_path: Path) -> None:
    result = EvalResult(Status.OK, 0.1, 0.46, (0.3, 0.46), 123, 456, 7.5, "42_3", None, {"test_accuracy": 0.9})
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.put("k", "f", "nb201", '{"ops": []}', result)
        assert store.get("k", "f") == result


def test_proposals_are_told_once_in_order(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        for pid in (1, 2, 3):
            store.add_proposal(ProposalRecord(pid, f"a{pid}", "f", "{}", (pid,), {"name": "cnn"}))
        store.set_job_ids({1: "101", 2: "102"})
        assert store.mark_told(2, _ok(0.2), cached=False) == 1
        assert store.mark_told(2, _ok(0.2), cached=False) == 1  # idempotent
        assert store.mark_told(1, _ok(0.1), cached=True) == 2
        assert [r.proposal_id for r in store.in_flight()] == [3]
        told = store.told()
        assert [(r.proposal_id, r.told_seq, r.job_id, r.cached) for r in told] == [(2, 1, "102", False), (1, 2, "101", True)]
        with pytest.raises(KeyError):
            store.mark_told(99, _ok(0.0), cached=False)


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.put("a", "f", "cnn", "{}", _ok(0.5))
                store.save_state("agent", b"half")
                raise RuntimeError("driver crashed mid-event")
        assert store.count() == 0 and store.load_state("agent") is None


def test_a_non_database_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=f"{re.escape(str(path))} is damaged or not a sqlite database") as info:
        ResultStore(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert path.read_bytes() == b"this is not sqlite" * 100  # left as it was, for the user to move aside


WRITER = textwrap.dedent(
    """
    import sys
    from nas_env.results import EvalResult, Status
    from nas_env.store import ResultStore
    store = ResultStore(sys.argv[1])
    i = 0
    while True:
        store.put(f"arch-{i}", "f", "cnn", "{}", EvalResult(Status.OK, reward=i / 1e6, metric=0.5))
        print(i, flush=True)  # reported only after the write is committed
        i += 1
    """
)


def test_every_reported_write_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    reported = -1
    deadline = time.monotonic() + 60
    while reported < 200 and time.monotonic() < deadline:
        reported = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert reported >= 200
    with ResultStore(path) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = {e.arch_key for e in store.evaluations()}
        assert {f"arch-{i}" for i in range(reported + 1)} <= keys
        assert store.get(f"arch-{reported}", "f").reward == pytest.approx(reported / 1e6)
