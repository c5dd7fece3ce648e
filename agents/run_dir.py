"""A run directory: the config, the store, the job folder and the logs of one search, in one place."""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from nas_env.config_dicts import dataclass_from_dict

#: the fields a resumed search may change: its limits; anything else would make it another search
RESUMABLE_FIELDS = ("budget", "max_wall_time_s", "max_simulated_time_s")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (no config, a damaged config, in use, another search)."""


@dataclasses.dataclass
class SearchConfig:
    """Everything that defines a search; written to ``config.json`` so ``--resume`` needs nothing else."""

    env_id: str = "NAS-CIFAR10-v0"
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    agent: str = "reinforce"
    agent_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    budget: int = 100  # number of evaluated architectures (each sampled architecture counts once)
    max_wall_time_s: float | None = None  # stop asking for more after this much search time
    max_simulated_time_s: float | None = None  # tabular benchmarks: stop after this much simulated training
    executor: dict[str, Any] = dataclasses.field(default_factory=dict)  # slurm.ExecutorConfig fields
    curriculum: dict[str, Any] | None = None  # agents.curriculum.DepthCurriculum fields, or None

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1 evaluation, got {self.budget}")
        for name in ("max_wall_time_s", "max_simulated_time_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchConfig":
        return dataclass_from_dict(cls, d, "search config")


class RunDir:
    """Paths inside a run directory, and reading/writing its config."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def store_path(self) -> Path:
        return self.path / "store.sqlite"

    @property
    def jobs_path(self) -> Path:
        return self.path / "jobs"

    @property
    def tensorboard_path(self) -> Path:
        return self.path / "tensorboard"

    @property
    def scalars_path(self) -> Path:
        return self.path / "scalars.csv"

    def exists(self) -> bool:
        return self.config_path.exists()

    def write_config(self, config: SearchConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
        tmp.replace(self.config_path)

    @property
    def lock_path(self) -> Path:
        return self.path / "driver.lock"

    def read_config(self) -> SearchConfig:
        if not self.exists():
            raise RunDirError(f"{self.path} is not a run directory (no config.json): nothing to resume")
        try:
            return SearchConfig.from_dict(json.loads(self.config_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise RunDirError(f"{self.config_path} is damaged ({exc}); fix it or start a new run directory") from exc

    def resolve_config(self, given: SearchConfig | None) -> SearchConfig:
        """The config a driver runs: ``given`` for a new run, the stored one for a resume.

        The one rule for what a resume may change, the same for every agent: the limits
        (:data:`RESUMABLE_FIELDS`) are taken from ``given``; any other field that differs is an error naming
        it. A budget below the evaluations already told is refused (rather than "10/5 evaluations").
        """
        if not self.exists():
            if given is None:
                self.read_config()  # raises: nothing to resume
            return given  # type: ignore[return-value]
        stored = self.read_config()
        if given is None:
            return stored
        theirs, ours = stored.to_dict(), given.to_dict()
        differing = [name for name in ours if name not in RESUMABLE_FIELDS and ours[name] != theirs.get(name)]
        if differing:
            name = differing[0]
            raise RunDirError(
                f"{self.path} holds a search with {name}={theirs.get(name)!r}, not {ours[name]!r}; a resumed search "
                f"may change only {', '.join(RESUMABLE_FIELDS)} (choose a new run directory for another search)"
            )
        return given

    def lock(self) -> "RunLock":
        """Hold this run directory for one driver (see :class:`RunLock`)."""
        return RunLock(self.lock_path)


class RunLock:
    """One driver per run directory: an exclusive ``flock`` on ``driver.lock``, held for the driver's life.

    The lock file names its holder (host, pid) for the message a second driver gets. The kernel drops the
    lock when the holder dies, ``kill -9`` included, so nothing is left to clean up before a resume.
    (``flock`` is local to one host on some network file systems: run one driver per run directory.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise RunDirError(
                f"{path.parent} is in use by a running search driver ({holder}); wait for it to end, or stop it "
                "and run --resume again"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"host {socket.gethostname()}, pid {os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


#: scalars.csv is flushed at most this often (and at close): a search of 12,800 children writes it 100,000 times
FLUSH_EVERY_S = 0.5


class ScalarLogger:
    """Named scalars to ``scalars.csv`` (always) and TensorBoard (when the package is installed)."""

    def __init__(self, run_dir: RunDir) -> None:
        self._csv_path = run_dir.scalars_path
        run_dir.path.mkdir(parents=True, exist_ok=True)
        new = not self._csv_path.exists()
        self._file = open(self._csv_path, "a", newline="")
        self._flushed_at = float("-inf")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value", "time"])
        try:
            from torch.utils.tensorboard import SummaryWriter

            # a large queue: the writer thread wakes once per 1,000 scalars or 10 s, not every 10 scalars
            self._tb = SummaryWriter(str(run_dir.tensorboard_path), max_queue=1000, flush_secs=10)
        except ImportError:  # tensorboard is an optional extra
            self._tb = None

    def log(self, step: int, scalars: dict[str, float], when: float | None = None) -> None:
        """``when``: the time column (default the Unix time; the simulated executor passes its virtual time)."""
        now = time.time() if when is None else when
        for name, value in scalars.items():
            value = float(value)
            if math.isnan(value):
                continue
            self._csv.writerow([step, name, value, now])
            if self._tb is not None:
                self._tb.add_scalar(name, value, step)
        if time.monotonic() - self._flushed_at >= FLUSH_EVERY_S:  # the store is the record; this is a view
            self._file.flush()
            self._flushed_at = time.monotonic()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
