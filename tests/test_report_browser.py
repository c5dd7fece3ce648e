"""The HTML reports in a real browser (headless Chromium; skipped with the reason when it is not installed).

Real searches through the CLI (NAS-Bench-201 with REINFORCE, a tiny CIFAR-10 search on the real subset, a
small comparison), then each page opened in Chromium: no request leaves the page (the browser's own net log,
plus every src/href of the HTML), the table has one row per top-k entry as the store has them, each row is
drawn, the screenshot is not blank. A search that refreshes its report while it is read never shows a partial
file; ``nas report --serve`` serves the page on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas_cli.main import main
from nas_env.store import ResultStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
ROOT = Path(__file__).resolve().parents[1]
TOP = 10


# ---------------------------------------------------------------------------------------------- the browser
def _chromium(page: Path, work: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Open ``page`` in headless Chromium with every host name unresolvable; returns the DOM as the browser
    built it and the URLs of the requests the page started (from Chromium's net log)."""
    work.mkdir(parents=True, exist_ok=True)
    netlog = work / f"netlog-{time.monotonic_ns()}.json"
    args = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={work / 'profile'}",
            f"--log-net-log={netlog}", "--net-log-capture-mode=Everything"]  # fmt: skip
    if screenshot is not None:
        args += [f"--screenshot={screenshot}", "--window-size=1200,2400"]
    else:
        args += ["--dump-dom"]
    proc = subprocess.run([*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, page_requests(netlog)


def page_requests(netlog: Path) -> list[str]:
    """URLs of the requests a page loaded from a file started: net-log URL_REQUEST_START_JOB events whose
    network isolation key is the file:// page (Chromium's own background requests have other keys)."""
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and "file://" in str(params.get("network_isolation_key", "")):
            urls.append(params["url"])
    return [u for u in urls if not u.startswith(("data:", "file:"))]


class _Page(HTMLParser):
    """Every URL-bearing attribute, and the rows (data-* attributes, has an architecture drawing) of each table."""

    URL_ATTRS = {"src", "href", "srcset", "action", "poster", "data", "background", "formaction", "xlink:href"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self._table: list[str] = []
        self.closed_html = False
        self.refresh = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v or "" for k, v in attrs if k in self.URL_ATTRS]
        self.urls += re.findall(r"url\(([^)]*)\)", a.get("style") or "")
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            self.refresh = True
        if tag == "table":
            self._table.append(a.get("id") or "")
            self.tables.setdefault(self._table[-1], [])
        elif tag == "tr" and self._table and any(k.startswith("data-") for k in a):
            self.tables[self._table[-1]].append({**{k[5:]: v for k, v in a.items() if k.startswith("data-")}, "drawn": False})
        elif tag == "svg" and "arch" in (a.get("class") or "") and self._table and self.tables[self._table[-1]]:
            self.tables[self._table[-1]][-1]["drawn"] = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()
        if tag == "html":
            self.closed_html = True

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"url\(([^)]*)\)", data) if "url(" in data else []


def parse(text: str) -> _Page:
    parser = _Page()
    parser.feed(text)
    parser.close()
    return parser


def external(urls: list[str]) -> list[str]:
    """The URLs that would leave the file: anything but data: URIs and in-page #fragments."""
    return [u for u in urls if not u.strip(" '\"").startswith(("data:", "#"))]


def assert_not_blank(png: Path) -> None:
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "the screenshot has (almost) one colour"
    assert (pixels.min(axis=2) < 200).mean() > 0.03, "the screenshot is nearly all white"


def open_and_check(page_path: Path, work: Path) -> _Page:
    """The checks every page passes: no request leaves it, it parses whole, its screenshot is not blank."""
    html = page_path.read_text()
    assert external(parse(html).urls) == [], "the HTML references something outside itself"
    dom, requests = _chromium(page_path, work)
    assert requests == [], f"the page made network requests: {requests}"
    shot = work / f"{page_path.parent.name}.png"
    _, requests = _chromium(page_path, work, screenshot=shot)
    assert requests == []
    assert_not_blank(shot)
    page = parse(dom)
    assert "<script" not in html.lower()  # readable with JavaScript off: there is none
    return page


def store_top_k(run_dir: Path, k: int) -> list[tuple[str, float]]:
    """Straight from sqlite: the k best distinct architectures (ties: first told) as (key, reward)."""
    with ResultStore(run_dir / "store.sqlite") as store:
        told = sorted(store.told(), key=lambda r: r.told_seq)
    first: dict[str, Any] = {}
    for r in told:
        first.setdefault(r.arch_key, r)
    ranked = sorted(first.values(), key=lambda r: (-r.reward, r.told_seq))[:k]
    return [(r.arch_key, float(r.reward)) for r in ranked]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("nb201") / "run"
    assert main(["search", "--env", "NAS-Bench-201-v0", "--agent", "reinforce", "--agent-kwargs", '{"batch_size": 4}',
                 "--budget", "20", "--executor", "inline", "--run-dir", str(run_dir), "--no-progress"]) == 0  # fmt: skip
    return run_dir


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.environ.get("NAS_DATA_DIR"):
        pytest.skip("NAS_DATA_DIR is not set: the tiny CIFAR-10 search needs the real subset")
    run_dir = tmp_path_factory.mktemp("cifar") / "run"
    assert main(["search", "--env", "NAS-CIFAR10-v0", "--agent", "random", "--recipe", "tiny", "--layers", "2",
                 "--budget", "3", "--device", "cpu", "--executor", "inline", "--run-dir", str(run_dir),
                 "--no-progress"]) == 0  # fmt: skip
    return run_dir


# ---------------------------------------------------------------------------------------------- tests
@needs_chromium
def test_the_request_checks_can_fail(tmp_path: Path) -> None:
    """A page that does reach out is caught by both checks (so their silence on the reports means something)."""
    bad = tmp_path / "bad" / "index.html"
    bad.parent.mkdir()
    bad.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png">'
                   '<div style="background:url(https://example.invalid/y.png)">x</div></body></html>')  # fmt: skip
    assert len(external(parse(bad.read_text()).urls)) == 2
    _, requests = _chromium(bad, tmp_path / "browser")
    assert any("example.invalid/x.png" in u for u in requests), requests


@needs_chromium
@pytest.mark.parametrize("which", ["nb201_run", "cifar_run"])
def test_run_report_in_a_browser(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    run_dir: Path = request.getfixturevalue(which)
    page_path = run_dir / "report" / "index.html"
    assert page_path.is_file()  # written by the search itself, at its end
    assert not parse(page_path.read_text()).refresh  # the search is over: the page no longer reloads
    assert main(["report", str(run_dir), "--top", str(TOP)]) == 0
    page = open_and_check(page_path, tmp_path)
    rows = page.tables["top-k-table"]
    expected = store_top_k(run_dir, TOP)
    assert [(r["key"], float(r["reward"])) for r in rows] == expected
    assert all(r["drawn"] for r in rows), "a top-k row without its drawing"
    assert [int(r["rank"]) for r in rows] == list(range(1, len(expected) + 1))
    for section in ("run-summary",):
        assert section in page.tables
    html = page_path.read_text()
    for needle in ("Best so far", "Every reward over time", "own scalars", "Accuracy against parameters"):
        assert needle in html
    if which == "nb201_run":
        assert "reinforce/baseline" in html or "agent_scalars" in html or "baseline" in html
        assert "Pareto front" in html


@needs_chromium
def test_compare_report_in_a_browser(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--env", "NAS-Bench-201-v0", "--agents", "random,rea:evolution",
                 "--agent-kwargs", 'rea={"population_size": 4, "sample_size": 2}', "--seeds", "2", "--budget", "8",
                 "--workers", "1", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    page = open_and_check(out / "index.html", tmp_path / "browser")
    summary = json.loads((out / "summary.json").read_text())
    rows = page.tables["agents-table"]
    assert [(r["label"], float(r["best-reward-mean"])) for r in rows] == [
        (a["label"], a["best_reward_mean"]) for a in summary["agents"]]
    runs = page.tables["runs-table"]
    assert len(runs) == 4 and all(r["drawn"] for r in runs)
    html = (out / "index.html").read_text()
    assert html.count("<img ") >= 3  # curves (evaluations, simulated time) and the final distribution


def test_a_refreshing_report_is_never_read_partially(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    page_path = run_dir / "report" / "index.html"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas_cli", "search", "--env", "NAS-Bench-201-v0", "--agent", "random", "--budget", "24",
         "--executor", "inline", "--run-dir", str(run_dir), "--no-progress", "--report-every", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    versions: set[str] = set()
    reads = 0
    live_seen = False
    try:
        while proc.poll() is None:
            if page_path.exists():
                text = page_path.read_text()
                reads += 1
                page = parse(text)
                assert text.endswith("</html>\n") and page.closed_html, "a partial page was read"
                assert text.count("<tr") == text.count("</tr>")
                rows = page.tables["top-k-table"]
                assert rows and all(r["drawn"] and "key" in r and "reward" in r for r in rows)
                live_seen |= page.refresh
                versions.add(text)
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert len(versions) >= 3 and reads > len(versions), (len(versions), reads)  # it was read while it changed
    assert live_seen, "no page of the running search reloaded itself"
    assert not parse(page_path.read_text()).refresh  # the last page, after the search: no reload
    assert [p.name for p in page_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_report_serve_on_localhost(nb201_run: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # started as from a terminal, where Ctrl-C reaches it: SIGINT not ignored even when pytest itself runs in the
    # background (a started process inherits an ignored SIGINT, and Python then keeps ignoring it)
    proc = subprocess.Popen([sys.executable, "-m", "nas_cli", "report", str(nb201_run), "--serve", "--port", "0",
                             "--serve-for", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_sigint_default)  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, proc.stderr.read()  # type: ignore[union-attr]
            match = re.search(r"at (http://127\.0\.0\.1:\d+/report/index\.html)", line)
            url = match.group(1) if match else None
        assert url is not None
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            assert response.read().decode().endswith("</html>\n")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130  # Ctrl-C stops it
