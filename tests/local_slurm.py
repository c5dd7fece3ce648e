"""Test helpers: a real one-node SLURM cluster for the duration of a ``with`` block, and dispatcher helpers.

``local_cluster(dir)`` runs ``slurm/cluster/start.sh`` on free ports, points ``SLURM_CONF`` at it and runs
``stop.sh`` on exit; ``simulate_preemption(job_id)`` sends a running job what a preemption with requeue
sends. ``slurm_packages_missing()`` says which programs are absent (the tests skip then;
``slurm/cluster/install-debian.sh`` installs them). Set ``NAS_TEST_SLURM_PATH`` to a PATH-like list of
folders to look for the programs there only: an empty folder makes this machine look like one without SLURM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

CLUSTER_SCRIPTS = Path(__file__).resolve().parents[1] / "slurm" / "cluster"

#: a partition whose jobs preempt (cancel) the jobs of the default partition ``debug`` (see :func:`local_cluster`)
URGENT_PARTITION = "urgent"

#: programs from the Debian packages slurmctld, slurmd, slurm-client, munge, slurmdbd, mariadb-server
REQUIRED_PROGRAMS = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "munged", "mariadbd", "mariadb-install-db")


def _find(program: str) -> str | None:
    search = os.environ.get("NAS_TEST_SLURM_PATH")
    if search is None:
        search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(program, path=search)


def slurm_packages_missing() -> list[str]:
    """The programs of a local SLURM cluster that are not installed (empty: all there)."""
    return [p for p in REQUIRED_PROGRAMS if _find(p) is None]


def slurm_packages_installed() -> bool:
    """Whether the Debian packages for :func:`local_cluster` are installed."""
    return not slurm_packages_missing()


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def simulate_preemption(job_id: str, timeout_s: float = 30.0) -> None:
    """Send a running SLURM job what a preemption sends (SIGTERM, then submitit's USR2), like submitit's
    ``SlurmJob._interrupt()``, but addressed to the job's step ``<raw id>.0``.

    SLURM 22.05 refuses ``scancel --signal`` on an array task while two or more of its siblings are
    still pending ("Job can not be altered now"); signalling the step works in every case.
    """
    from submitit.slurm.slurm import SlurmJobEnvironment

    raw = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%A"], capture_output=True, text=True, timeout=timeout_s, check=True
    ).stdout.split()
    if not raw:
        raise RuntimeError(f"SLURM job {job_id} is not in the queue")
    for sig in ("SIGTERM", SlurmJobEnvironment.USR_SIG):
        sent = subprocess.run(
            ["scancel", "--signal", sig, f"{raw[0]}.0"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if sent.returncode != 0:
            state = subprocess.run(
                ["sacct", "-n", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True, timeout=timeout_s
            ).stdout.split()
            raise RuntimeError(
                f"scancel --signal {sig} {raw[0]}.0 failed (rc {sent.returncode}: {sent.stderr.strip()}); "
                f"job {job_id} is {state or 'unknown to sacct'}"
            )


def enable_preemption(conf: Path, env: dict[str, str]) -> None:
    """Add partition preemption (mode CANCEL) and :data:`URGENT_PARTITION` to ``conf``; ``scontrol reconfigure``."""
    text = conf.read_text()
    if "PreemptType=" not in text:
        conf.write_text(
            text.rstrip("\n") + "\n# Added by the tests: a job of the urgent partition cancels (preempts) debug jobs.\n"
            "PreemptType=preempt/partition_prio\nPreemptMode=CANCEL\n"
            f"PartitionName={URGENT_PARTITION} Nodes=ALL PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE State=UP\n"
        )
    done = subprocess.run(["scontrol", "reconfigure"], env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scontrol reconfigure failed: {done.stderr}")
    deadline = time.monotonic() + 60
    while URGENT_PARTITION not in _partitions(env):
        if time.monotonic() > deadline:
            raise RuntimeError(f"partition {URGENT_PARTITION} did not appear after scontrol reconfigure")
        time.sleep(0.2)


def _partitions(env: dict[str, str]) -> list[str]:
    out = subprocess.run(["sinfo", "-h", "-o", "%R"], env=env, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split()


@contextlib.contextmanager
def local_cluster(directory: str | Path, start_timeout_s: float = 120.0) -> Iterator[Path]:
    """Start munged, MariaDB, slurmdbd, slurmctld and slurmd under ``directory``; yield the SLURM_CONF path.

    ``os.environ["SLURM_CONF"]`` points at the cluster inside the block (jobs inherit it) and is restored
    after; the daemons are stopped on exit, also after an error. Needs root. Besides ``slurm/cluster``'s
    configuration the cluster has partition preemption: a job of :data:`URGENT_PARTITION` cancels the
    ``debug`` jobs in its way, which then end PREEMPTED (not requeued).
    """
    directory = Path(directory).absolute()
    ctld, slurmd, dbd, mariadb = free_ports(4)
    env = {
        **os.environ,
        "SLURMCTLD_PORT": str(ctld),
        "SLURMD_PORT": str(slurmd),
        "SLURMDBD_PORT": str(dbd),
        "MARIADB_PORT": str(mariadb),
    }
    env.pop("SLURM_CONF", None)
    start = subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS / "start.sh"), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=start_timeout_s,
        check=False,
    )
    conf = directory / "etc" / "slurm.conf"
    try:
        if start.returncode != 0:
            raise RuntimeError(f"slurm/cluster/start.sh failed (rc {start.returncode}):\n{start.stderr}")
        enable_preemption(conf, env={**env, "SLURM_CONF": str(conf)})
        previous = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(conf)
        try:
            yield conf
        finally:
            if previous is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous
    finally:
        subprocess.run(
            ["bash", str(CLUSTER_SCRIPTS / "stop.sh"), str(directory)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def distinct_architectures(space: Any, n: int, offset: int = 0) -> list[Any]:
    """``n`` seeded architectures of ``space`` with distinct keys (children for dispatcher tests)."""
    out, seen, seed = [], set(), offset
    while len(out) < n:
        arch = space.sample(seed)
        seed += 1
        if space.key(arch) not in seen:
            seen.add(space.key(arch))
            out.append(arch)
    return out


def collect_completed(dispatcher: Any, n: int, timeout: float = 300.0) -> dict[str, Any]:
    """Wait for ``n`` results of ``dispatcher`` (key -> Completed); fail with what arrived if they do not
    come within ``timeout`` (a bound on a hang, not an expected duration), or if one task completes twice."""
    done: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(done) < n and time.monotonic() < deadline:
        for c in dispatcher.wait(timeout=max(0.0, deadline - time.monotonic())):
            assert c.key not in done, f"{c.key} completed twice"
            done[c.key] = c
    assert len(done) == n, f"only {sorted(done)} of {n} completed; in flight: {dispatcher.in_flight()}"
    return done
