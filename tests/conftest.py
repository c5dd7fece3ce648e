"""Shared fixtures: where the real datasets are, small seeded spaces."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    """NAS_DATA_DIR if set (CI points it at the shared data folder), else ../shared/data beside the repo."""
    env = os.environ.get("NAS_DATA_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker, and every process it starts (local children, CLI runs, SLURM jobs), keeps
    to its share of the cores unless ``OMP_NUM_THREADS`` is set: with two workers of two torch threads each on
    two cores, an OpenMP thread stalls whenever its core is busy (a ``cpu-demo`` child: 138 s against 75 s with
    one thread while another process held a core; 43 s against 68 s on an idle machine)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    from slurm.local_backend import share_of_cores

    threads = share_of_cores(workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def sb3_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SB3's ``learn()`` without a logger makes a new ``SB3-<date>`` folder in the system's temp directory
    each time unless ``SB3_LOGDIR`` names one: the tests' SB3 models log into this session's folder."""
    folder = tmp_path_factory.mktemp("sb3-logs")
    previous = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = previous


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "cifar10-subset").is_dir():
        pytest.fail(f"real test data not found under {root}: set NAS_DATA_DIR to the folder holding cifar10-subset/")
    return root


@pytest.fixture(scope="session")
def cifar_dir(data_root: Path) -> Path:
    return data_root / "cifar10-subset"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty NAS_CACHE_DIR and no NAS_DATA_DIR, so only the cache and downloads can be found."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAS_CACHE_DIR", str(folder))
    monkeypatch.delenv("NAS_DATA_DIR", raising=False)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder, base URL) of a real HTTP server on 127.0.0.1 serving that folder (dataset downloads)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (an unreachable download URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real one-node SLURM (munge, MariaDB, slurmdbd, slurmctld, slurmd) for the whole session; yields
    its slurm.conf, also exported as SLURM_CONF. Every test using it is skipped, naming the missing
    programs, when the Debian packages are not installed (NAS_TEST_SLURM_PATH=<empty folder> pretends so)."""
    from local_slurm import local_cluster, slurm_packages_missing

    missing = slurm_packages_missing()
    if missing:
        pytest.skip(
            f"SLURM packages not installed, missing programs: {', '.join(missing)} "
            "(slurm/cluster/install-debian.sh installs them)"
        )
    with local_cluster(tmp_path_factory.mktemp("slurm-cluster")) as conf:
        yield conf


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a test: on a shared 2-core machine a second OpenMP thread stalls whenever
    the other core is busy, which makes small tensors an order of magnitude slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the group marker into the node id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``-n``, see pyproject's addopts) every test of the one-node SLURM cluster runs on one
    worker, so the session starts one cluster; the other tests spread over the workers. The SLURM tests come
    first, then the tests marked ``minutes``: each starts while the SLURM worker mostly waits on its jobs,
    instead of ending the run alone or competing with the busiest part of it for the two cores."""
    slurm = []
    for item in items:
        if item.get_closest_marker("slurm") is not None or "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
            slurm.append(item)
    rest = [item for item in items if item not in slurm]
    long_first = [item for item in rest if item.get_closest_marker("minutes") is not None]
    items[:] = slurm + long_first + [item for item in rest if item not in long_first]
