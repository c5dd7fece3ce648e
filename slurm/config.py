"""Resources and limits for dispatching children: one frozen :class:`ExecutorConfig`, from CLI flags or a file.

The same settings drive every executor (``local``, ``slurm``, ``inline``); the SLURM-only fields are
ignored by the others. A config round-trips through ``to_dict`` / ``from_dict`` and is written into the
run directory so a resumed run dispatches with the same settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

from nas_env.config_dicts import dataclass_from_dict

#: the executors a :class:`~slurm.dispatch.Dispatcher` knows, the default first
EXECUTORS: tuple[str, ...] = ("local", "slurm", "inline", "simulated")


class ClusterConfigError(RuntimeError):
    """The executor settings or the cluster cannot run children (raised by ``Dispatcher.check()``)."""


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Where and with what resources each child (one architecture to train) runs.

    ``max_in_flight`` caps the jobs submitted but not yet collected, and is also the job-array
    parallelism on SLURM. ``extra_sbatch`` adds raw ``#SBATCH --key=value`` lines (e.g.
    ``{"constraint": "a100"}``). ``max_requeues`` bounds the requeues after a time-out signal (submitit
    counts a preemption as a time-out too when the time limit is under ~12 min). ``poll_interval_s`` is
    the least time between two scheduler queries. ``job_name`` is the SLURM job name of every child.

    The local executor uses ``time_limit_min``, ``max_requeues`` and ``gpus_per_child`` (each child sees
    GPUs ``0..gpus_per_child-1`` through CUDA_VISIBLE_DEVICES; 0 hides all GPUs); the resource fields
    only matter on SLURM.

    The ``simulated`` executor (``max_in_flight`` workers on a virtual clock, see
    :mod:`slurm.simulated_backend`) reads the ``sim_*`` fields: a queue delay and a start-up time per job,
    the probability that a child fails or is preempted part-way (a preempted child is requeued, up to
    ``max_requeues`` times, and resumes its remaining epochs), and the seed of those draws.

    ``pool`` > 0 (local and slurm) runs the children in that many long-lived worker jobs that pull tasks
    from the run directory (:mod:`slurm.pool`) instead of one job per child; workers end when the search
    is over or after ``pool_idle_timeout_s`` without a sign of the driver. ``children_per_gpu`` k runs k
    children at once in each worker, as processes sharing its GPU (each limited to its share of the GPU's
    memory; on CPU simply k at once); k > 1 without ``pool`` runs one such worker (the local slot).
    """

    executor: str = "local"
    partition: str | None = None
    gpus_per_child: int = 0
    cpus_per_child: int = 1
    mem_gb: float | None = None
    time_limit_min: int = 60
    account: str | None = None
    qos: str | None = None
    max_in_flight: int = 8
    extra_sbatch: dict[str, str] = dataclasses.field(default_factory=dict)
    poll_interval_s: float = 1.0
    max_requeues: int = 3
    job_name: str = "nas-child"
    sim_queue_delay_s: float = 0.0
    sim_startup_s: float = 0.0
    sim_failure_rate: float = 0.0
    sim_preemption_rate: float = 0.0
    sim_seed: int = 0
    pool: int = 0
    children_per_gpu: int = 1
    pool_idle_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; choose one of {list(EXECUTORS)}")
        for name in ("gpus_per_child", "max_requeues"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("cpus_per_child", "time_limit_min", "max_in_flight", "children_per_gpu"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mem_gb is not None and float(self.mem_gb) <= 0:
            raise ValueError(f"mem_gb must be > 0 or None, got {self.mem_gb}")
        for name in ("sim_queue_delay_s", "sim_startup_s"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("sim_failure_rate", "sim_preemption_rate"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if int(self.pool) < 0:
            raise ValueError(f"pool must be >= 0 (0: one job per child), got {self.pool}")
        if (int(self.pool) or int(self.children_per_gpu) > 1) and self.executor not in ("local", "slurm"):
            raise ValueError(
                f"pool={self.pool} / children_per_gpu={self.children_per_gpu} need the local or slurm executor, "
                f"not {self.executor!r}"
            )
        if float(self.pool_idle_timeout_s) <= 0:
            raise ValueError(f"pool_idle_timeout_s must be > 0, got {self.pool_idle_timeout_s}")
        if float(self.poll_interval_s) <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {self.poll_interval_s}")
        if not isinstance(self.extra_sbatch, Mapping):
            raise ValueError(f"extra_sbatch must be a mapping of sbatch option -> value, got {self.extra_sbatch!r}")
        object.__setattr__(self, "extra_sbatch", {str(k): str(v) for k, v in self.extra_sbatch.items()})

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready data; ``from_dict(to_dict())`` gives an equal config."""
        d = dataclasses.asdict(self)
        d["extra_sbatch"] = dict(self.extra_sbatch)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExecutorConfig":
        """Build from a mapping; unknown keys are an error naming them (typos must not pass silently)."""
        return dataclass_from_dict(cls, data, "executor config")

    @classmethod
    def from_file(cls, path: str | Path) -> "ExecutorConfig":
        """Read a ``.toml`` or ``.json`` file; a TOML file may hold the keys at top level or under ``[executor]``."""
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ValueError(f"executor config {path} must end in .toml or .json")
        if isinstance(data.get("executor"), Mapping):  # [executor] table
            data = data["executor"]
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "ExecutorConfig":
        """A copy with some fields changed (the config is frozen)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ command line
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add ``--executor``, ``--slurm-partition``, ... and ``--executor-config FILE`` to a CLI parser."""
        g = parser.add_argument_group("executor (where children train)")
        g.add_argument("--executor-config", type=Path, default=None, help="TOML/JSON file with these settings")
        g.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="local (default; inline for NAS-Bench-201-v0, a table lookup), slurm, inline, or simulated "
                       "(a virtual clock)")
        g.add_argument("--slurm-partition", dest="partition", default=None,
                       help="SLURM partition (default: the cluster's default)")
        g.add_argument("--gpus-per-child", type=int, default=None)
        g.add_argument("--cpus-per-child", type=int, default=None)
        g.add_argument("--mem-gb", type=float, default=None)
        g.add_argument("--time-limit-min", type=int, default=None)
        g.add_argument("--slurm-account", dest="account", default=None)
        g.add_argument("--slurm-qos", dest="qos", default=None)
        g.add_argument("--slurm-job-name", dest="job_name", default=None, help="job name of the children")
        g.add_argument("--max-in-flight", type=int, default=None, help="children running at once (array parallelism)")
        g.add_argument("--poll-interval-s", type=float, default=None)
        g.add_argument("--max-requeues", type=int, default=None)
        g.add_argument("--pool", type=int, default=None,
                       help="N long-lived worker jobs that pull children from the run directory (0: a job per child)")
        g.add_argument("--children-per-gpu", type=int, default=None,
                       help="k children at once per worker, sharing its GPU (k > 1 without --pool: one local worker)")
        g.add_argument("--pool-idle-timeout-s", type=float, default=None,
                       help="pool workers exit after this long without a sign of the driver (default 300)")
        g.add_argument(
            "--sbatch", action="append", default=None, metavar="KEY=VALUE", help="extra #SBATCH option (repeatable)"
        )
        s = parser.add_argument_group("simulated executor (--executor simulated: a virtual clock, no waiting)")
        s.add_argument("--sim-queue-delay-s", type=float, default=None, help="queue wait of every job")
        s.add_argument("--sim-startup-s", type=float, default=None, help="start-up time of every job")
        s.add_argument("--sim-failure-rate", type=float, default=None, help="probability that a child fails")
        s.add_argument("--sim-preemption-rate", type=float, default=None, help="probability that a child is preempted")
        s.add_argument("--sim-seed", type=int, default=None, help="seed of the failure and preemption draws")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ExecutorConfig":
        """The config file (if any), overridden by the flags that were given."""
        config = cls.from_file(args.executor_config) if getattr(args, "executor_config", None) else cls()
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = getattr(args, f.name, None)
            if value is not None and f.name != "extra_sbatch":
                changes[f.name] = value
        if getattr(args, "sbatch", None):
            extra = dict(config.extra_sbatch)
            for item in args.sbatch:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ValueError(f"--sbatch expects KEY=VALUE, got {item!r}")
                extra[key.lstrip("-")] = value
            changes["extra_sbatch"] = extra
        return config.replace(**changes) if changes else config
