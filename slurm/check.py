"""Validate SLURM settings before anything is submitted: tools on PATH, controller up, partition and limits.

Each problem raises :class:`~slurm.config.ClusterConfigError` with one sentence naming it, because a
job that can never start otherwise sits PENDING while the search waits for it.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from slurm.config import ClusterConfigError, ExecutorConfig

#: the client commands the slurm executor runs (srun runs inside the job; submitit requires it on PATH)
REQUIRED_COMMANDS = ("sbatch", "sacct", "scancel", "scontrol", "sinfo", "srun")


def run_command(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client command; a hang or a missing binary becomes a ClusterConfigError."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise ClusterConfigError(f"`{' '.join(argv)}` did not answer within {timeout_s:.0f} s") from e
    except OSError as e:
        raise ClusterConfigError(f"cannot run `{argv[0]}`: {e}") from e


def _slurm_conf() -> str:
    return os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf (default)")


@dataclass(frozen=True)
class PartitionInfo:
    """What ``sinfo`` says about one partition (maxima over its node groups)."""

    name: str
    default: bool
    available: bool
    time_limit_min: float | None  # None: no limit
    max_cpus: int
    max_mem_mb: int
    has_gpus: bool


def parse_time_limit(text: str) -> float | None:
    """SLURM time limit (``infinite``, ``30:00``, ``1-00:00:00``, ``90``) -> minutes; None when unlimited."""
    text = text.strip().lower()
    if text in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        minutes = float(parts[0])
    elif len(parts) == 2:
        minutes = parts[0] + parts[1] / 60
    else:
        minutes = parts[0] * 60 + parts[1] + parts[2] / 60
    return minutes + (int(days) * 24 * 60 if days else 0)


def _int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def read_partitions(timeout_s: float = 30.0) -> dict[str, PartitionInfo]:
    """Partitions from ``sinfo``, merged over node groups."""
    result = run_command(["sinfo", "-h", "-o", "%P|%a|%l|%c|%m|%G"], timeout_s)
    if result.returncode != 0:
        raise ClusterConfigError(f"`sinfo` failed (SLURM_CONF={_slurm_conf()}): {result.stderr.strip()}")
    parts: dict[str, PartitionInfo] = {}
    for line in result.stdout.splitlines():
        fields = line.split("|")
        if len(fields) != 6:
            continue
        raw, avail, limit, cpus, mem, gres = fields
        name = raw.rstrip("*")
        info = PartitionInfo(
            name=name,
            default=raw.endswith("*"),
            available=avail.strip() == "up",
            time_limit_min=parse_time_limit(limit),
            max_cpus=_int(cpus),
            max_mem_mb=_int(mem),
            has_gpus="gpu" in gres,
        )
        if name in parts:
            old = parts[name]
            info = PartitionInfo(
                name=name,
                default=old.default or info.default,
                available=old.available or info.available,
                time_limit_min=info.time_limit_min,
                max_cpus=max(old.max_cpus, info.max_cpus),
                max_mem_mb=max(old.max_mem_mb, info.max_mem_mb),
                has_gpus=old.has_gpus or info.has_gpus,
            )
        parts[name] = info
    return parts


def check_slurm(config: ExecutorConfig, timeout_s: float = 15.0) -> None:
    """Raise ClusterConfigError unless jobs with ``config``'s resources can be submitted and watched."""
    # the configuration the user named comes first: its message is the same with or without the tools
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        raise ClusterConfigError(f"SLURM_CONF={conf} is not a file: point it at the cluster's slurm.conf or unset it")
    for command in REQUIRED_COMMANDS:
        if shutil.which(command) is None:
            raise ClusterConfigError(
                f"`{command}` is not on PATH: install the SLURM client tools or use the local executor"
            )
    try:
        ping = run_command(["scontrol", "ping"], timeout_s)
    except ClusterConfigError as e:
        raise ClusterConfigError(f"the SLURM controller is not reachable (SLURM_CONF={_slurm_conf()}): {e}") from e
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        first = (ping.stdout.strip().splitlines() or [ping.stderr.strip()])[0]
        raise ClusterConfigError(f"the SLURM controller is not reachable (SLURM_CONF={_slurm_conf()}): {first}")

    partitions = read_partitions(timeout_s)
    if config.partition is None:
        defaults = [p for p in partitions.values() if p.default]
        if not defaults:
            raise ClusterConfigError(f"the cluster has no default partition: set one of {sorted(partitions)}")
        part = defaults[0]
    elif config.partition not in partitions:
        raise ClusterConfigError(f"partition {config.partition!r} does not exist; the cluster has {sorted(partitions)}")
    else:
        part = partitions[config.partition]
    if not part.available:
        raise ClusterConfigError(f"partition {part.name!r} is not up")
    if config.cpus_per_child > part.max_cpus:
        raise ClusterConfigError(
            f"cpus_per_child={config.cpus_per_child} but the nodes of partition {part.name!r} "
            f"have at most {part.max_cpus} CPUs"
        )
    if config.mem_gb is not None and config.mem_gb * 1024 > part.max_mem_mb:
        raise ClusterConfigError(
            f"mem_gb={config.mem_gb} but the nodes of partition {part.name!r} have at most {part.max_mem_mb} MB"
        )
    if config.gpus_per_child > 0 and not part.has_gpus:
        raise ClusterConfigError(f"gpus_per_child={config.gpus_per_child} but partition {part.name!r} has no GPUs")
    if part.time_limit_min is not None and config.time_limit_min > part.time_limit_min:
        raise ClusterConfigError(
            f"time_limit_min={config.time_limit_min} exceeds partition {part.name!r}'s limit "
            f"of {part.time_limit_min:.0f} min"
        )

    sacct = run_command(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], timeout_s)
    if sacct.returncode != 0:
        raise ClusterConfigError(
            "`sacct` does not work, so job states cannot be watched (is accounting through slurmdbd enabled?): "
            + sacct.stderr.strip()
        )
    if config.qos is not None:
        qos = run_command(["sacctmgr", "-n", "-P", "show", "qos", "format=Name"], timeout_s)
        if qos.returncode == 0 and config.qos not in qos.stdout.split():
            raise ClusterConfigError(f"QOS {config.qos!r} does not exist; the cluster has {qos.stdout.split()}")
    if config.account is not None:
        user = getpass.getuser()
        assoc = run_command(
            ["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=Account"], timeout_s
        )
        if assoc.returncode == 0 and config.account not in assoc.stdout.split():
            raise ClusterConfigError(f"user {user!r} has no association with account {config.account!r}")
