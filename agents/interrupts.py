"""Graceful stop of a search driver: SIGINT (Ctrl-C) and SIGTERM (what SLURM sends a job) end the driver
between two events, never inside one.

Outside a critical section a signal raises :class:`SearchInterrupted` at once (so an inline child's training
stops too). Inside one (a store transaction with the agent's tell, a submission and the recording of its job
ids) the signal is remembered and raised when the section ends, after the commit. Once stopping, further
signals are ignored with a message, so a second Ctrl-C cannot break the cleanup.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from types import FrameType
from typing import Any, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchInterrupted(KeyboardInterrupt):
    """The driver was asked to stop by ``signum``; everything committed so far is in the store."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class GracefulStop:
    """Installs the stop handlers while active (main thread only) and defers them inside :meth:`critical`."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; a driver in another thread stops with it
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section no stop signal may cut: a signal arriving inside is raised once it is left."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending is not None and not self.stopping:
            self.stopping = True
            raise SearchInterrupted(self._pending)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            print(f"\n{signal.Signals(signum).name}: already stopping, finishing the current write", file=sys.stderr)
            return
        if self._depth > 0:
            self._pending = signum
            return
        self.stopping = True
        raise SearchInterrupted(signum)
