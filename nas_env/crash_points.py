"""Named boundaries where a crash test may stop this process, to prove that no instant loses or repeats work.

Production code marks its boundaries with :func:`crash_point` (``store.begin``, ``store.commit``,
``dispatch.submitted``, ``agent.told``, ...). Nothing happens unless the environment variable
``NAS_CRASH_AT`` (driver boundaries) or ``NAS_WORKER_CRASH_AT`` (boundaries named ``worker.*``) holds
``NAME:K:SIGNAL``: the K-th time this process reaches a boundary called NAME (``*`` counts every boundary)
it sends itself SIGNAL (``KILL``, ``INT`` or ``TERM``). ``NAME:K:SIGNAL:FILE`` stops only the first process
to get there (it creates FILE; one that finds FILE goes on): jobs inherit the variable, and a task that is run
again after its job was stopped must not be stopped again. The check costs one dictionary look-up when unset.
"""

from __future__ import annotations

import os
import signal

DRIVER_VARIABLE = "NAS_CRASH_AT"
WORKER_VARIABLE = "NAS_WORKER_CRASH_AT"

_counts: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int, signal.Signals, str | None]:
    try:
        name, k, sig, *once = spec.split(":", 3)
        return name, int(k), signal.Signals["SIG" + sig.upper().removeprefix("SIG")], (once[0] if once else None)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"crash point spec {spec!r}: expected NAME:K:SIGNAL[:FILE], e.g. store.commit:3:KILL") from exc


def crash_point(name: str) -> None:
    """Mark a boundary; stop this process here if a crash test asked for it (see the module doc)."""
    spec = os.environ.get(WORKER_VARIABLE if name.startswith("worker.") else DRIVER_VARIABLE)
    if not spec:
        return
    target, k, sig, once = _parse(spec)
    for counted in {name, "*"}:  # every boundary is counted under its name and under "*"
        _counts[counted] = _counts.get(counted, 0) + 1
    if target in ("*", name) and _counts[target] == k:
        if once is not None:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # an earlier process stopped here already
        os.kill(os.getpid(), sig)


def boundaries_reached() -> dict[str, int]:
    """How many boundaries of each name (``*``: any) this process has reached while a spec was set (a harness
    sets one with a K beyond the run to learn how many boundaries of each kind a run passes)."""
    return dict(_counts)


def forget_boundaries() -> None:
    """Start counting from zero (a forked process that runs a new driver)."""
    _counts.clear()
