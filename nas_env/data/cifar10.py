"""CIFAR-10 in the official python-batch format: find it, download it, read it, split it.

The reader checks every file it opens and names the file and the problem when something is wrong;
sizes come from ``len(labels)``, never from ``batches.meta`` (prefix subsets keep the original meta).
"""

from __future__ import annotations

import dataclasses
import pickle
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from nas_env.data.download import download, extract_tar, move_into_place, staging_folder
from nas_env.data.paths import (
    CorruptDatasetError,
    DatasetNotFoundError,
    cache_dir,
    locate_dataset,
)

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_FOLDER = "cifar-10-batches-py"
# Dataset folders looked for inside a data folder, the complete official one first.
FOLDER_NAMES = (ARCHIVE_FOLDER, "cifar10-subset")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
REQUIRED_FILES = TRAIN_FILES + TEST_FILES
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ROW_LENGTH = 3 * 32 * 32

# The only globals a batch pickle needs (official files, or arrays re-saved at protocols 2-5);
# anything else is refused, never imported, so reading a file cannot run code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside _ALLOWED_GLOBALS."""


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals a CIFAR-10 batch uses (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"refers to {module}.{name}, which a CIFAR-10 batch never contains (refused)")
        return super().find_class(module, name)


@dataclasses.dataclass(frozen=True, eq=False)
class CIFAR10Splits:
    """The training set cut into train and validation parts: images NHWC uint8, labels int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def load_cifar10(directory: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read one split from a folder of official batch files: (images N x 32 x 32 x 3 uint8, labels int64)."""
    directory = Path(directory)
    names = _split_files(split)
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise DatasetNotFoundError(f"CIFAR-10 {split} split", [directory], names, missing=missing)
    batches = [_read_batch(directory / name) for name in names]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return images, labels


def find_cifar10(
    data_dir: str | Path | None = None,
    download: bool = True,
    url: str = OFFICIAL_URL,
    md5: str = OFFICIAL_MD5,
) -> Path:
    """The folder holding the CIFAR-10 batch files: data_dir, then NAS_DATA_DIR, then the cache, then a download.

    An explicit ``data_dir`` that holds no CIFAR-10 is an error at once (a typo must not start a download).
    """
    fetch = (lambda: _download_and_extract(url, md5, cache_dir())) if download else None
    return locate_dataset("CIFAR-10", REQUIRED_FILES, data_dir, _candidates, _has_batches,
                          cache_dir() / ARCHIVE_FOLDER, fetch)  # fmt: skip


def train_val_split(num_images: int, num_val: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic disjoint (train, validation) index arrays covering range(num_images), each sorted."""
    _check_int("num_images", num_images, minimum=2)
    if num_val is None:
        num_val = max(1, round(num_images * 0.1))
    _check_int("num_val", num_val, minimum=1)
    if num_val >= num_images:
        raise ValueError(f"num_val must be smaller than num_images ({num_images}), got {num_val}")
    _check_int("seed", seed, minimum=0)
    order = np.random.default_rng(seed).permutation(num_images)
    return np.sort(order[num_val:]).astype(np.int64), np.sort(order[:num_val]).astype(np.int64)


def load_cifar10_splits(
    data_dir: str | Path | None = None,
    num_val: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> CIFAR10Splits:
    """Find CIFAR-10, read its training set and hold out a seeded validation set (the search's reward data)."""
    images, labels = load_cifar10(find_cifar10(data_dir, download=download), "train")
    train_idx, val_idx = train_val_split(len(labels), num_val, seed)
    return CIFAR10Splits(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx])


def _split_files(split: str) -> tuple[str, ...]:
    """The batch file names of a split, in the order their images are concatenated."""
    if split == "train":
        return TRAIN_FILES
    if split == "test":
        return TEST_FILES
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One checked batch file as (images NHWC uint8, labels int64)."""
    batch = _unpickle(path)
    data = _checked_data(path, batch)
    labels = _checked_labels(path, batch, len(data))
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _unpickle(path: Path) -> dict[str, Any]:
    """The dict stored in a batch file, or CorruptDatasetError saying why it cannot be read."""
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
    except OSError as exc:
        raise CorruptDatasetError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except _RefusedGlobal as exc:
        raise CorruptDatasetError(path, str(exc)) from exc
    except Exception as exc:  # truncated or garbled pickles raise many different types
        problem = f"not a readable pickle, maybe truncated ({type(exc).__name__}: {exc})"
        raise CorruptDatasetError(path, problem) from exc
    if not isinstance(batch, dict):
        problem = f"holds a {type(batch).__name__}, expected a dict with keys 'data' and 'labels'"
        raise CorruptDatasetError(path, problem)
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        found = ", ".join(repr(k) for k in batch) or "none"
        raise CorruptDatasetError(path, f"missing key(s) {', '.join(map(repr, missing))} (keys found: {found})")
    return batch


def _checked_data(path: Path, batch: dict[str, Any]) -> np.ndarray:
    """The 'data' array of a batch, checked to be non-empty uint8 rows of 3072 pixels."""
    data = batch["data"]
    if not isinstance(data, np.ndarray):
        raise CorruptDatasetError(path, f"'data' is a {type(data).__name__}, expected a numpy array")
    if data.dtype != np.uint8:
        raise CorruptDatasetError(path, f"'data' has dtype {data.dtype}, expected uint8")
    if data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        raise CorruptDatasetError(path, f"'data' has shape {data.shape}, expected (N, {ROW_LENGTH})")
    if data.shape[0] == 0:
        raise CorruptDatasetError(path, "'data' holds no images")
    return data


def _checked_labels(path: Path, batch: dict[str, Any], num_images: int) -> np.ndarray:
    """The 'labels' of a batch as int64, checked to be one class index in 0..9 per image."""
    try:
        labels = np.asarray(batch["labels"])
    except (TypeError, ValueError) as exc:
        raise CorruptDatasetError(path, f"'labels' is not a list of integers ({exc})") from exc
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        problem = f"'labels' is not a flat list of integers (dtype {labels.dtype}, shape {labels.shape})"
        raise CorruptDatasetError(path, problem)
    if len(labels) != num_images:
        raise CorruptDatasetError(path, f"{len(labels)} labels for {num_images} images")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
    if bad.size:
        raise CorruptDatasetError(
            path, f"{bad.size} label(s) outside 0..{len(CLASSES) - 1}, first {labels[bad[0]]} at index {bad[0]}"
        )
    return labels.astype(np.int64)


def _check_int(name: str, value: object, minimum: int) -> None:
    """ValueError unless value is an int (not a bool) of at least minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _candidates(folder: Path) -> list[Path]:
    """The folders that may hold the batch files, given a dataset folder or a folder of dataset folders."""
    return [folder] + [folder / name for name in FOLDER_NAMES]


def _has_batches(folder: Path) -> bool:
    """Whether every train and test batch file is present in folder."""
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def _download_and_extract(url: str, md5: str, destination: Path) -> Path:
    """Download the archive into destination, check its md5, extract it safely and return the batch folder."""
    destination.mkdir(parents=True, exist_ok=True)
    archive = destination / (PurePosixPath(urllib.parse.urlsplit(url).path).name or "cifar-10-python.tar.gz")
    download(url, archive, checksum=md5, algorithm="md5")
    try:
        return _extract(archive, destination)
    finally:
        archive.unlink(missing_ok=True)


def _extract(archive: Path, destination: Path) -> Path:
    """Extract the archive's batch folder into destination, refusing members that could escape it."""
    target = destination / ARCHIVE_FOLDER
    with staging_folder(destination) as staging:
        extract_tar(archive, staging)
        if not _has_batches(staging / ARCHIVE_FOLDER):
            raise CorruptDatasetError(archive, f"has no {ARCHIVE_FOLDER}/ folder with {', '.join(REQUIRED_FILES)}")
        if not _has_batches(target):  # another process may have finished first
            move_into_place(staging / ARCHIVE_FOLDER, target)
        return target
