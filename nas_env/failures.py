"""One classifier for how an evaluation that raised ended: out of memory, a setup error, or a failure.

Used wherever an exception (or the traceback a worker sent back) becomes a result: ``safe_evaluate``,
the trainers' out-of-memory handling, and the dispatcher's backends. Divergence is not here: it is a
training outcome (the loss became non-finite), never an exception.
"""

from __future__ import annotations

import re

import nas_env.data.paths  # noqa: F401 - registers the dataset errors in the setup family
from nas_env.errors import SetupError
from nas_env.results import Status

__all__ = ["classify", "classify_traceback", "is_out_of_memory", "setup_error_names"]

#: the base names of the setup family, matched in tracebacks even when no subclass module is imported
SETUP_NAMES = ("SetupError", "DatasetError", "DeviceError")
#: text that marks a traceback as out of memory (torch's CUDA OOM, Python's MemoryError, C++ allocators)
OOM_MARKERS = ("OutOfMemoryError", "MemoryError", "out of memory", "std::bad_alloc")
#: exceptions that mean the job was stopped from outside, not that the child failed
INTERRUPTIONS = ("KeyboardInterrupt", "SystemExit")
# The header line of an exception in a formatted traceback: "pkg.module.Name: message" or a bare "Name".
_HEADER = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)", re.MULTILINE)


def _family(cls: type) -> set[str]:
    names = {cls.__name__}
    for sub in cls.__subclasses__():
        names |= _family(sub)
    return names


def setup_error_names() -> frozenset[str]:
    """Class names of the setup family: the base names plus every subclass defined so far."""
    return frozenset(SETUP_NAMES) | frozenset(_family(SetupError))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or while handling (cycles cut)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in out):
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    """True for host or device out-of-memory errors (torch raises several kinds), here or in the chain."""
    for e in _chain(exc):
        if isinstance(e, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(e).__mro__):
            return True
        if "out of memory" in str(e).lower():
            return True
    return False


def classify(exc: BaseException) -> Status:
    """SETUP for the setup family, OOM for out-of-memory errors, FAILED for anything else."""
    if isinstance(exc, SetupError):
        return Status.SETUP
    if is_out_of_memory(exc):
        return Status.OOM
    return Status.FAILED


def classify_traceback(text: str) -> Status:
    """What :func:`classify` says of the exception a formatted traceback ends with (text from a worker).

    SETUP when the last exception line names a class of the setup family, LOST when the job was interrupted
    (KeyboardInterrupt, SystemExit), OOM when any out-of-memory marker appears, FAILED otherwise.
    """
    headers = _HEADER.findall(text)
    if headers and headers[-1].rsplit(".", 1)[-1] in setup_error_names():
        return Status.SETUP
    if headers and headers[-1].rsplit(".", 1)[-1] in INTERRUPTIONS:
        return Status.LOST  # the job was stopped from outside: its child did not fail
    lowered = text.lower()
    if any(marker.lower() in lowered for marker in OOM_MARKERS):
        return Status.OOM
    return Status.FAILED
