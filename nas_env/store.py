"""The result store: one sqlite file holding every evaluation, written the moment it arrives.

Evaluations are keyed by (canonical architecture key, evaluator fingerprint): the fingerprint names the
budget, the dataset and the reward shaping, so a repeated architecture under the same evaluator is never
trained twice, and a crash loses nothing that had finished. Searches also keep their proposals (in flight or
told, in order) and the agent's checkpoint here, so a killed driver resumes from this file alone.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from nas_env.crash_points import crash_point
from nas_env.results import EvalResult, Status

#: statuses that say something about the architecture itself, so a repeat would end the same way;
#: the others (cancelled, preempted, never started, timeout) are the cluster's doing and are retried
CACHEABLE = frozenset({Status.OK, Status.DIVERGED, Status.OOM, Status.FAILED, Status.OVER_LIMIT})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    arch_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    space       TEXT NOT NULL,
    arch_json   TEXT NOT NULL,
    status      TEXT NOT NULL,
    reward      REAL NOT NULL,
    metric      REAL,
    result_json TEXT NOT NULL,
    created_at  REAL NOT NULL,
    UNIQUE (arch_key, fingerprint)
);
CREATE TABLE IF NOT EXISTS proposals (
    proposal_id  INTEGER PRIMARY KEY,
    arch_key     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    arch_json    TEXT NOT NULL,
    tokens_json  TEXT NOT NULL,
    space_json   TEXT NOT NULL,
    job_id       TEXT,
    asked_at     REAL NOT NULL,
    told_seq     INTEGER UNIQUE,
    status       TEXT,
    reward       REAL,
    cached       INTEGER,
    told_at      REAL
);
CREATE TABLE IF NOT EXISTS state (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class StoredEvaluation:
    """One row of the store: the architecture (as JSON) and its result."""

    id: int
    arch_key: str
    fingerprint: str
    space: str
    arch_json: str
    result: EvalResult
    created_at: float


@dataclass(frozen=True)
class ProposalRecord:
    """One architecture a search asked for: in flight until ``told_seq`` is set."""

    proposal_id: int
    arch_key: str
    fingerprint: str
    arch_json: str
    tokens: tuple[int, ...]
    space_config: dict[str, Any]
    job_id: str | None = None
    told_seq: int | None = None
    status: str | None = None
    reward: float | None = None
    cached: bool | None = None
    told_at: float | None = None


class StoreError(ValueError):
    """The store file cannot be used (not a sqlite database, damaged, unreadable); the message names it."""


class ResultStore:
    """A small sqlite wrapper; every write is committed at once (WAL mode, safe against ``kill -9``).

    Opening checks the file (``PRAGMA quick_check``): a damaged store is a :class:`StoreError` naming the
    file before anything is read from or written to it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"result store {self.path} is damaged or not a sqlite database ({exc}); "
                "move it aside and start a new run, or restore it from a copy"
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ evaluations
    def put(self, arch_key: str, fingerprint: str, space: str, arch_json: str, result: EvalResult) -> int:
        """Record an evaluation (replacing an earlier non-cacheable one for the same key); returns its id."""
        row = (
            arch_key,
            fingerprint,
            space,
            arch_json,
            result.status.value,
            float(result.reward),
            None if result.metric is None else float(result.metric),
            result.to_json(),
            time.time(),
        )
        cur = self._db.execute(
            "INSERT INTO evaluations (arch_key, fingerprint, space, arch_json, status, reward, metric, result_json,"
            " created_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(arch_key, fingerprint) DO UPDATE SET"
            " status=excluded.status, reward=excluded.reward, metric=excluded.metric,"
            " result_json=excluded.result_json, created_at=excluded.created_at RETURNING id",
            row,
        )
        return int(cur.fetchone()[0])

    def get(self, arch_key: str, fingerprint: str) -> EvalResult | None:
        """The stored result for this architecture and evaluator, if any."""
        row = self._db.execute(
            "SELECT result_json FROM evaluations WHERE arch_key=? AND fingerprint=?", (arch_key, fingerprint)
        ).fetchone()
        return None if row is None else EvalResult.from_json(row[0])

    def get_cached(self, arch_key: str, fingerprint: str) -> EvalResult | None:
        """Like :meth:`get`, but only results that a repeat would reproduce (see ``CACHEABLE``)."""
        result = self.get(arch_key, fingerprint)
        return result if result is not None and result.status in CACHEABLE else None

    def evaluations(self, fingerprint: str | None = None) -> Iterator[StoredEvaluation]:
        """Every stored evaluation in arrival order (optionally for one evaluator)."""
        sql = "SELECT id, arch_key, fingerprint, space, arch_json, result_json, created_at FROM evaluations"
        args: tuple[Any, ...] = ()
        if fingerprint is not None:
            sql, args = sql + " WHERE fingerprint=?", (fingerprint,)
        for row in self._db.execute(sql + " ORDER BY id", args):
            yield StoredEvaluation(row[0], row[1], row[2], row[3], row[4], EvalResult.from_json(row[5]), row[6])

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])

    def best(self, k: int = 10, fingerprint: str | None = None) -> list[StoredEvaluation]:
        """The ``k`` evaluations with the highest reward."""
        rows = sorted(self.evaluations(fingerprint), key=lambda e: e.result.reward, reverse=True)
        return rows[:k]

    # ------------------------------------------------------------------ search bookkeeping
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so that they land together or not at all (e.g. a result and the agent state).

        Whatever interrupts it (an exception, KeyboardInterrupt, even one raised between ``BEGIN`` and the
        body), the transaction is either committed whole or rolled back: it never stays open.
        """
        try:
            crash_point("store.begin")
            self._db.execute("BEGIN IMMEDIATE")
            crash_point("store.inside")
            yield
            crash_point("store.commit")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        crash_point("store.committed")

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``["ok"]`` for a sound file, else the problems found."""
        return [row[0] for row in self._db.execute("PRAGMA integrity_check")]

    def num_in_flight(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM proposals WHERE told_seq IS NULL").fetchone()[0])

    def add_proposal(self, record: ProposalRecord) -> None:
        """Register an architecture that a search asked for (in flight until :meth:`mark_told`)."""
        self._db.execute(
            "INSERT INTO proposals (proposal_id, arch_key, fingerprint, arch_json, tokens_json, space_json, job_id,"
            " asked_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                record.proposal_id,
                record.arch_key,
                record.fingerprint,
                record.arch_json,
                json.dumps(list(record.tokens)),
                json.dumps(record.space_config, sort_keys=True),
                record.job_id,
                time.time(),
            ),
        )

    def set_job_ids(self, job_ids: dict[int, str | None]) -> None:
        """Remember which scheduler job runs each proposal (to reattach after a driver crash)."""
        self._db.executemany(
            "UPDATE proposals SET job_id=? WHERE proposal_id=?", [(j, pid) for pid, j in job_ids.items()]
        )

    def mark_told(self, proposal_id: int, result: EvalResult, cached: bool) -> int:
        """Record that the agent was told this proposal's result; returns its sequence number."""
        row = self._db.execute("SELECT told_seq FROM proposals WHERE proposal_id=?", (proposal_id,)).fetchone()
        if row is None:
            raise KeyError(f"unknown proposal {proposal_id}")
        if row[0] is not None:
            return int(row[0])
        seq = int(self._db.execute("SELECT COALESCE(MAX(told_seq), 0) FROM proposals").fetchone()[0]) + 1
        self._db.execute(
            "UPDATE proposals SET told_seq=?, status=?, reward=?, cached=?, told_at=? WHERE proposal_id=?",
            (seq, result.status.value, float(result.reward), int(cached), time.time(), proposal_id),
        )
        return seq

    def num_told(self) -> int:
        return int(self._db.execute("SELECT COUNT(told_seq) FROM proposals").fetchone()[0])

    def num_proposals(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0])

    def in_flight(self) -> list[ProposalRecord]:
        """Proposals asked for and not yet told, oldest first."""
        return self._proposals("WHERE told_seq IS NULL ORDER BY proposal_id")

    def told(self, after_seq: int = 0) -> list[ProposalRecord]:
        """Told proposals in the order the agent heard them (optionally only after ``after_seq``)."""
        return self._proposals("WHERE told_seq > ? ORDER BY told_seq", (after_seq,))

    def _proposals(self, where: str, args: tuple[Any, ...] = ()) -> list[ProposalRecord]:
        cols = (
            "proposal_id, arch_key, fingerprint, arch_json, tokens_json, space_json, job_id, told_seq, status,"
            " reward, cached, told_at"
        )
        out = []
        for r in self._db.execute(f"SELECT {cols} FROM proposals {where}", args):
            out.append(
                ProposalRecord(
                    r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), json.loads(r[5]), r[6], r[7], r[8], r[9],
                    None if r[10] is None else bool(r[10]), r[11],
                )
            )
        return out

    def save_state(self, name: str, value: bytes) -> None:
        """Keep a blob (e.g. the agent checkpoint) beside the results, in the same transaction if any."""
        self._db.execute("INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)", (name, sqlite3.Binary(value)))

    def load_states(self, prefix: str) -> dict[str, bytes]:
        """Every blob whose name starts with ``prefix``, by the rest of its name."""
        rows = self._db.execute("SELECT name, value FROM state WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))
        return {name[len(prefix):]: bytes(value) for name, value in rows}

    def load_state(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM state WHERE name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])
