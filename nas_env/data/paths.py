"""Where datasets live, and the errors raised when they are missing or damaged.

One setting finds datasets: the environment variable ``NAS_DATA_DIR`` names a folder that holds
dataset folders such as ``cifar10-subset/``, ``cifar-10-batches-py/``, ``ptb/`` or ``nasbench201/``.
Downloads go to ``NAS_CACHE_DIR`` if set, else ``~/.cache/nas-rl``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from nas_env.errors import SetupError

DATA_DIR_ENV = "NAS_DATA_DIR"
CACHE_DIR_ENV = "NAS_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/nas-rl")


class DatasetError(SetupError):
    """Base class for every problem with finding or reading a dataset: a setup error (the search stops)."""


class DatasetNotFoundError(DatasetError):
    """The dataset, or some of its files, is in none of the places searched."""

    def __init__(
        self,
        dataset: str,
        searched: Iterable[Path | str],
        expected: Iterable[str],
        missing: Iterable[str] = (),
    ) -> None:
        self.dataset = dataset
        self.searched = tuple(Path(p) for p in searched)
        self.expected = tuple(expected)
        self.missing = tuple(missing)
        where = ", ".join(str(p) for p in self.searched) or "(no folder)"
        lacking = f" Missing: {', '.join(self.missing)}." if self.missing else ""
        super().__init__(
            f"{dataset} not found. Searched: {where}. Expected files: {', '.join(self.expected)}.{lacking}"
            f" To fix: set {DATA_DIR_ENV} to the folder holding the dataset folder, pass data_dir,"
            " or allow download."
        )

    def __reduce__(self) -> tuple:
        """Rebuild from the fields, so the error survives pickling (e.g. back from a SLURM worker)."""
        return type(self), (self.dataset, self.searched, self.expected, self.missing)


class CorruptDatasetError(DatasetError):
    """A dataset file exists but its content is not what the format requires."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"corrupt dataset file {self.path}: {problem}")

    def __reduce__(self) -> tuple:
        """Rebuild from the fields, so the error survives pickling (e.g. back from a SLURM worker)."""
        return type(self), (self.path, self.problem)


class DatasetDownloadError(DatasetError):
    """A dataset could not be downloaded (unreachable host, HTTP error, interrupted transfer)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot download {url}: {reason}. To fix: check the network or the URL, or set {DATA_DIR_ENV}"
            " to a folder that already holds the dataset."
        )

    def __reduce__(self) -> tuple:
        """Rebuild from the fields, so the error survives pickling (e.g. back from a SLURM worker)."""
        return type(self), (self.url, self.reason)


def data_root() -> Path | None:
    """The folder named by NAS_DATA_DIR (None if unset), the one place datasets are looked up."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloads are stored: NAS_CACHE_DIR if set, else ~/.cache/nas-rl (not created here)."""
    value = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_CACHE_DIR.expanduser()


def locate_dataset(
    dataset: str,
    expected: Sequence[str],
    data_dir: str | Path | None,
    candidates: Callable[[Path], list[Path]],
    complete: Callable[[Path], bool],
    cached: Path,
    fetch: Callable[[], Path] | None,
    missing: Callable[[list[Path]], list[str]] = lambda folders: [],
) -> Path:
    """The lookup order every dataset follows: an explicit ``data_dir`` (an error at once if it lacks the
    data: a typo must not start a download), then NAS_DATA_DIR, then ``cached``, then ``fetch()`` (a
    download; None when downloads are off). ``candidates(folder)`` are the folders a setting may mean
    (the dataset folder itself or its parent); ``complete(folder)`` says whether one holds the data."""
    if data_dir is not None:
        folders = candidates(Path(data_dir))
        found = next((c for c in folders if complete(c)), None)
        if found is None:
            raise DatasetNotFoundError(dataset, folders, expected, missing=missing(folders))
        return found
    searched: list[Path] = []
    root = data_root()
    if root is not None:
        searched += candidates(root)
        found = next((c for c in searched if complete(c)), None)
        if found is not None:
            return found
    searched.append(cached)
    if complete(cached):
        return cached
    if fetch is not None:
        return fetch()
    raise DatasetNotFoundError(dataset, searched, expected, missing=missing(searched))
