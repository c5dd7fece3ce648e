"""Build the packaged NAS-Bench-201 table ``nas_env/data/tables/nb201.npz`` from the shared CSV.

Usage::

    python scripts/build_nb201_table.py [CSV] [--out NPZ]

``CSV`` defaults to ``$NAS_DATA_DIR/nasbench201/nasbench201_all_15625.csv`` (or ``../shared/data``
beside the repository when ``NAS_DATA_DIR`` is unset). The CSV must have the SHA256 below (and match
the ``SHA256SUMS`` next to it, when present), so the packaged numbers are traceable to one file.

Storage: accuracies stay float64 (the CSV has 6 decimals and float32 would merge 87 distinct
ImageNet16-120 values into ties); times are float32 (max error 1.2e-4 s over 3,460 s); params and
FLOPs are exact int32 counts (``round(M * 1e6)``); ``arch_str`` is fixed-width unicode in index order.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np

CSV_NAME = "nasbench201_all_15625.csv"
EXPECTED_SHA256 = "2a9612ab2aea8cc5fad412335cb19883d5a6d248a63d949feacae554d3943612"
NUM_ROWS = 15625
FORMAT_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "nas_env" / "data" / "tables" / "nb201.npz"

ACCURACY_COLUMNS = (
    "cifar10valid_valid_acc_12ep",
    "cifar10valid_valid_acc_200ep",
    "cifar100_valid_acc_12ep",
    "imagenet16_120_valid_acc_12ep",
    "cifar10_test_acc_200ep",
    "cifar10valid_test_acc_200ep",
    "cifar10_test_acc_12ep",
    "cifar100_test_acc_12ep",
    "cifar100_test_acc_200ep",
    "imagenet16_120_test_acc_12ep",
    "imagenet16_120_test_acc_200ep",
)
TIME_COLUMNS = ("cifar10valid_train_time_per_epoch_s", "cifar10valid_train_time_200ep_s")
#: CSV column (millions) -> packaged column (exact integer count)
COUNT_COLUMNS = {
    f"{kind}_M_{ds}": f"{kind}_{ds}"
    for kind in ("params", "flops")
    for ds in ("cifar10", "cifar100", "imagenet16_120")
}


class BuildError(Exception):
    """The CSV is not the expected file or does not have the expected shape."""


def default_csv() -> Path:
    """``$NAS_DATA_DIR/nasbench201/<CSV_NAME>``, else the shared data folder beside the repository."""
    root = os.environ.get("NAS_DATA_DIR")
    base = Path(root) if root else REPO_ROOT.parent / "shared" / "data"
    return base / "nasbench201" / CSV_NAME


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str = EXPECTED_SHA256) -> str:
    """Raise unless the CSV has ``expected`` SHA256 and agrees with a ``SHA256SUMS`` beside it."""
    actual = sha256_of(path)
    if actual != expected:
        raise BuildError(f"{path}: SHA256 {actual} != expected {expected} (not the reviewed table)")
    sums = path.parent / "SHA256SUMS"
    if sums.exists():
        listed = {parts[-1].lstrip("*"): parts[0] for parts in map(str.split, sums.read_text().splitlines()) if parts}
        if path.name in listed and listed[path.name] != actual:
            raise BuildError(f"{sums} lists {listed[path.name]} for {path.name}, the file has {actual}")
    return actual


def read_csv(path: Path) -> dict[str, list[str]]:
    """Every column of the CSV as a list of strings, after checking the rows and the index order."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    needed = ["index", "arch_str", "iso_class_id", *ACCURACY_COLUMNS, *TIME_COLUMNS, *COUNT_COLUMNS]
    missing = [c for c in needed if c not in header]
    if missing:
        raise BuildError(f"{path}: missing columns {missing}")
    if len(rows) != NUM_ROWS:
        raise BuildError(f"{path}: expected {NUM_ROWS} rows, got {len(rows)}")
    columns = {c: [row[c] for row in rows] for c in needed}
    if [int(i) for i in columns["index"]] != list(range(NUM_ROWS)):
        raise BuildError(f"{path}: the index column is not 0..{NUM_ROWS - 1} in order")
    if len(set(columns["arch_str"])) != NUM_ROWS:
        raise BuildError(f"{path}: arch_str values are not unique")
    return columns


def to_floats(values: list[str], name: str) -> np.ndarray:
    out = np.array([float(v) for v in values], dtype=np.float64)
    if not np.isfinite(out).all():
        raise BuildError(f"column {name} has non-finite values")
    return out


def to_counts(values: np.ndarray, name: str) -> np.ndarray:
    """Millions -> exact int32 counts; raises if a value is not a whole count."""
    counts = np.round(values * 1e6)
    if np.abs(counts - values * 1e6).max() > 1e-3:
        raise BuildError(f"column {name} is not a whole number of units at 1e-6 M resolution")
    return counts.astype(np.int32)


def build_arrays(columns: dict[str, list[str]], source_sha256: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The packaged arrays, and the max absolute storage error of each lossy (float32) column."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
        "source_sha256": np.array(source_sha256),
        "arch_str": np.array(columns["arch_str"]),  # fixed-width unicode, index order
        "iso_class_id": np.array([int(v) for v in columns["iso_class_id"]], dtype=np.int16),
    }
    errors: dict[str, float] = {}
    for name in ACCURACY_COLUMNS:
        arrays[name] = to_floats(columns[name], name)
    for name in TIME_COLUMNS:
        exact = to_floats(columns[name], name)
        arrays[name] = exact.astype(np.float32)
        errors[name] = float(np.abs(arrays[name].astype(np.float64) - exact).max())
    for src, dst in COUNT_COLUMNS.items():
        arrays[dst] = to_counts(to_floats(columns[src], src), src)
    return arrays, errors


def write_npz(arrays: dict[str, np.ndarray], out: Path) -> int:
    """Write atomically (temp file + rename); returns the size in bytes."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    return out.stat().st_size


def check_written(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """Reload the file and compare every array with what was meant to be written."""
    with np.load(out, allow_pickle=False) as npz:
        for name, expected in arrays.items():
            if not np.array_equal(npz[name], expected):
                raise BuildError(f"{out}: column {name} differs after reloading")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=None, help=f"the {CSV_NAME} to read")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the .npz")
    args = parser.parse_args(argv)
    path = args.csv or default_csv()
    try:
        digest = verify_checksum(path)
        arrays, errors = build_arrays(read_csv(path), digest)
        size = write_npz(arrays, args.out)
        check_written(args.out, arrays)
    except (BuildError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"read {path.name} (sha256 {digest})")
    print(f"wrote {args.out.name}: {len(arrays)} arrays, {size:,} bytes")
    for name, err in errors.items():
        print(f"  float32 max abs error {name}: {err:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
