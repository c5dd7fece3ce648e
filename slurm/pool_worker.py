"""The job side of a worker pool: a long-lived job that pulls child tasks from the run directory.

A pool worker (one job of ``--pool N``) loads nothing until a task needs it, then keeps what it loaded
(the prepared data stay in the process's cache, ``nas_env.data_cache``), so each further child costs its
training only. It scans ``pool/tasks/`` for tasks without a result, takes one through the task's claim file
(:mod:`slurm.claims`: first claim wins, so a task is trained once), trains it with its epoch checkpoint
(another worker resumes it there if this one dies), and writes ``pool/results/<attempt>.pkl`` atomically in
the format of a submitit result pickle. It exits when ``pool/done`` appears (the search is over) or when the
driver's heartbeat ``pool/driver.alive`` is older than the idle timeout (the driver is gone).

With ``children`` k > 1 the worker forks k slot processes that do the same side by side, sharing the job's
GPU; each first caps itself at its share of the GPU's memory (:func:`nas_env.gpu_share.limit_child_memory`).
Each slot touches its own heartbeat file in ``pool/workers/`` so the driver can tell a dead slot's claims
from a live one's.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from nas_env.crash_points import crash_point
from nas_env.errors import SetupError
from nas_env.gpu_share import limit_child_memory
from slurm.claims import claim_task, current_job_claim, duplicate_result, read_claim, release_dead_claim
from slurm.job import EvaluateTask

#: seconds between two touches of a worker's heartbeat file
HEARTBEAT_INTERVAL_S = 1.0
#: seconds between two scans of an empty task folder
SCAN_INTERVAL_S = 0.1


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the whole file or none (rename into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    aside.write_bytes(data)
    os.replace(aside, path)


def safe_name(text: str) -> str:
    """``text`` as a file name (job ids of arrays hold ``_``; folders may hold anything)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


@dataclass(frozen=True)
class PoolPaths:
    """The files of a pool under the dispatcher folder ``jobs/``: ``jobs/pool/...`` and the task claims in
    ``jobs/claims/`` (the same claim files as one job per child, so the two modes agree on a task's owner)."""

    root: Path

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    @property
    def errors(self) -> Path:
        return self.root / "errors"

    @property
    def driver_alive(self) -> Path:
        return self.root / "driver.alive"

    @property
    def done(self) -> Path:
        return self.root / "done"

    def task_file(self, attempt: str, claim_path: str | Path) -> Path:
        """The task of one attempt; its name also holds its claim file's stem, so a scan needs no unpickling."""
        return self.tasks / f"{attempt}~{Path(claim_path).stem}.pkl"

    def claim_of_task_file(self, task_file: Path) -> Path:
        return self.root.parent / "claims" / f"{task_file.stem.partition('~')[2]}.json"

    def result_file(self, attempt: str) -> Path:
        return self.results / f"{attempt}.pkl"

    def worker_file(self, worker: str) -> Path:
        return self.workers / f"{safe_name(worker)}.json"

    def make(self) -> None:
        for folder in (self.tasks, self.results, self.workers, self.errors):
            folder.mkdir(parents=True, exist_ok=True)


def attempt_of(task_file: Path) -> str:
    """The attempt id (the pool's job id of a task) in a task file's name."""
    return task_file.stem.partition("~")[0]


class PoolWorker:
    """The job function of one pool worker (see the module docstring); returns how many tasks it ran."""

    def __init__(self, root: str, children: int = 1, idle_timeout_s: float = 300.0) -> None:
        self.root = root
        self.children = int(children)
        self.idle_timeout_s = float(idle_timeout_s)

    def __call__(self) -> int:
        me = current_job_claim() or {"job_id": f"pid{os.getpid()}", "folder": ""}
        if self.children == 1:
            return self.slot(me, 0)
        context = multiprocessing.get_context("fork")  # nothing touched CUDA in this process yet
        slots = [context.Process(target=self.slot, args=(me, i), daemon=False) for i in range(self.children)]
        for process in slots:
            process.start()
        for process in slots:
            process.join()
        return 0

    # ------------------------------------------------------------------ one slot
    def slot(self, me: dict[str, str], index: int) -> int:
        """Pull and run tasks until the search is over or the driver is gone; the count of tasks run."""
        paths = PoolPaths(Path(self.root))
        worker = f"{me['job_id']}.{index}"
        heartbeat = paths.worker_file(worker)
        atomic_write(heartbeat, json.dumps({"worker": worker, "job": me, "host": socket.gethostname(),
                                            "pid": os.getpid()}).encode())  # fmt: skip
        stop = threading.Event()
        beat = threading.Thread(target=_beat, args=(heartbeat, stop), daemon=True)
        beat.start()
        ran = 0
        try:
            try:
                limit_child_memory(self.children)
            except SetupError as e:
                atomic_write(paths.errors / f"{safe_name(worker)}.txt", str(e).encode())
                return 0
            started = time.time()
            while not paths.done.exists() and not self._driver_gone(paths, started):
                if self._run_one(paths, worker):
                    ran += 1
                else:
                    time.sleep(SCAN_INTERVAL_S)
        finally:
            stop.set()
            beat.join(timeout=5)
            heartbeat.unlink(missing_ok=True)
        return ran

    def _driver_gone(self, paths: PoolPaths, started: float) -> bool:
        try:
            seen = paths.driver_alive.stat().st_mtime
        except FileNotFoundError:
            seen = started
        return time.time() - max(seen, started) > self.idle_timeout_s

    def _run_one(self, paths: PoolPaths, worker: str) -> bool:
        """Take the first task nobody owns and run it; False if there was none."""
        try:
            names = sorted(os.listdir(paths.tasks))
        except FileNotFoundError:
            return False
        for name in names:
            if not name.endswith(".pkl") or name.startswith("."):
                continue
            task_file = paths.tasks / name
            attempt = attempt_of(task_file)
            if paths.result_file(attempt).exists():
                continue
            claim = read_claim(paths.claim_of_task_file(task_file))
            if claim is not None and claim.get("job_id") == attempt:
                continue  # another worker runs this attempt (or ran it: the driver is collecting it)
            try:
                task: EvaluateTask = pickle.loads(task_file.read_bytes())
            except (OSError, EOFError, pickle.UnpicklingError):
                continue  # collected or cancelled since the listing
            owner = {"job_id": attempt, "worker": worker}
            other = claim_task(task.claim_path, owner) if task.claim_path else None
            if other is not None:
                if other.get("job_id") == attempt:
                    continue  # another worker won this attempt just now
                outcome: tuple[str, Any] = ("success", duplicate_result(other, task.evaluator.failure_reward))
            elif not task_file.exists():  # cancelled between the listing and the claim: give it back
                release_dead_claim(task.claim_path, owner)
                continue
            else:
                try:
                    outcome = ("success", task.evaluate())
                except Exception:  # noqa: BLE001 - the driver classifies the traceback, as for any job
                    outcome = ("error", traceback.format_exc())
                crash_point("worker.result")  # trained, no result written yet: a kill here loses the result
            atomic_write(paths.result_file(attempt), cloudpickle.dumps(outcome))
            return True
        return False


def _beat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_INTERVAL_S):
        try:
            os.utime(path)
        except FileNotFoundError:
            return
