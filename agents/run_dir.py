"""A run directory: the config, the store, the job folder and the logs of one search, in one place."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from nas_env.config_dicts import dataclass_from_dict


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

    def read_config(self) -> SearchConfig:
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json): nothing to resume")
        return SearchConfig.from_dict(json.loads(self.config_path.read_text()))


class ScalarLogger:
    """Named scalars to ``scalars.csv`` (always) and TensorBoard (when the package is installed)."""

    def __init__(self, run_dir: RunDir) -> None:
        self._csv_path = run_dir.scalars_path
        run_dir.path.mkdir(parents=True, exist_ok=True)
        new = not self._csv_path.exists()
        self._file = open(self._csv_path, "a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value", "time"])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir.tensorboard_path))
        except ImportError:  # tensorboard is an optional extra
            self._tb = None

    def log(self, step: int, scalars: dict[str, float]) -> None:
        now = time.time()
        for name, value in scalars.items():
            value = float(value)
            if math.isnan(value):
                continue
            self._csv.writerow([step, name, value, now])
            if self._tb is not None:
                self._tb.add_scalar(name, value, step)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
