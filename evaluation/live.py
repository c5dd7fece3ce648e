"""A search's report while it runs (:class:`LiveReport`), and a local web server for it (:func:`serve`).

``nas search`` registers a :class:`LiveReport` with the search core (``core.on_told_callbacks``): every
``every`` told results (and once at the end) it rewrites ``RUN_DIR/report/`` atomically; the page reloads
itself while the run is unfinished. A failing refresh is reported once and never stops the search.
"""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path
from typing import Callable, TextIO

from evaluation.report import write_run_report

DEFAULT_EVERY = 10
DEFAULT_REFRESH_S = 15


class LiveReport:
    """Callable with the told count: rewrite the report every ``every`` told results."""

    def __init__(self, run_dir: str | Path, every: int = DEFAULT_EVERY, k: int = 10,
                 refresh_s: int = DEFAULT_REFRESH_S, err: TextIO | None = None) -> None:  # fmt: skip
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.run_dir = Path(run_dir)
        self.every, self.k, self.refresh_s = every, k, refresh_s
        self.err = err if err is not None else sys.stderr
        self.last_told = 0
        self.writes = 0
        self._warned = False

    def __call__(self, told: int) -> None:
        if told - self.last_told >= self.every:
            self.write(told, live=True)

    def write(self, told: int | None = None, live: bool = False) -> bool:
        """Rewrite the report now (``live``: the page reloads itself); False if it could not be written."""
        if told is not None:
            self.last_told = told
        try:
            write_run_report(self.run_dir, self.k, live=live, refresh_s=self.refresh_s)
        except ValueError:
            return False  # nothing told yet: nothing to report
        except Exception as exc:  # noqa: BLE001 - a report must never stop a search
            if not self._warned:
                print(f"nas search: warning: the live report could not be written ({exc}); the search goes on",
                      file=self.err)  # fmt: skip
                self._warned = True
            return False
        self.writes += 1
        return True


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a reload gets the refreshed page
        super().end_headers()


def serve(run_dir: str | Path, port: int = 8000, host: str = "127.0.0.1", timeout_s: float | None = None,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``run_dir`` (read-only, the standard library's file server) on ``host:port`` until Ctrl-C or
    ``timeout_s`` seconds. ``port`` 0 takes a free port; ``on_ready`` gets the report's URL."""
    handler = functools.partial(_QuietHandler, directory=str(Path(run_dir).resolve()))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        server.daemon_threads = True
        url = f"http://{host}:{server.server_address[1]}/report/index.html"
        if on_ready is not None:
            on_ready(url)
        timer = None
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, server.shutdown)
            timer.daemon = True
            timer.start()
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            if timer is not None:
                timer.cancel()
