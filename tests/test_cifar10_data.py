"""CIFAR-10 loading, validation, resolution, download and splitting, on the real subset and a real HTTP server."""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from nas_env.data import (
    CLASSES,
    CorruptDatasetError,
    DatasetDownloadError,
    DatasetError,
    DatasetNotFoundError,
    find_cifar10,
    load_cifar10,
    load_cifar10_splits,
    paths,
    train_val_split,
)
from nas_env.errors import SetupError

BATCH_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
ALL_FILES = BATCH_FILES + ("batches.meta",)


# --- helpers and fixtures -------------------------------------------------------------------------


def _raw(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="latin1")


def _write(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture
def subset_copy(tmp_path: Path, cifar_dir: Path) -> Path:
    """A writable copy of the real subset, to damage."""
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in ALL_FILES:
        shutil.copyfile(cifar_dir / name, folder / name)
    return folder


def _build_archive(path: Path, cifar_dir: Path) -> str:
    """Write a cifar-10-python.tar.gz of the subset under cifar-10-batches-py/ and return its md5."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name in ALL_FILES:
            tar.add(cifar_dir / name, arcname=f"cifar-10-batches-py/{name}")
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tar_with(path: Path, name: str) -> str:
    """Write a tar.gz holding one small file member called name and return its md5."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- reading the real subset ----------------------------------------------------------------------


def test_train_split_of_real_subset(cifar_dir: Path) -> None:
    images, labels = load_cifar10(cifar_dir, "train")
    assert images.shape == (5551, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (5551,) and labels.dtype == np.int64
    assert images.flags.c_contiguous
    assert labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert np.bincount(labels, minlength=10).tolist() == [547, 579, 539, 536, 570, 531, 553, 564, 588, 544]


def test_test_split_of_real_subset(cifar_dir: Path) -> None:
    images, labels = load_cifar10(cifar_dir, "test")
    assert images.shape == (1017, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_images_are_nhwc_from_rgb_planes_in_batch_order(cifar_dir: Path) -> None:
    images, _ = load_cifar10(cifar_dir, "train")
    first, second = _raw(cifar_dir / "data_batch_1")["data"], _raw(cifar_dir / "data_batch_2")["data"]
    for channel in range(3):
        plane = first[0, channel * 1024 : (channel + 1) * 1024].reshape(32, 32)
        np.testing.assert_array_equal(images[0, :, :, channel], plane)
    np.testing.assert_array_equal(images[len(first)].transpose(2, 0, 1).reshape(-1), second[0])


def test_classes() -> None:
    assert CLASSES[6] == "frog" and CLASSES[3] == "cat" and len(CLASSES) == 10


def test_unknown_split_is_a_value_error(cifar_dir: Path) -> None:
    with pytest.raises(ValueError, match="'valid'"):
        load_cifar10(cifar_dir, "valid")


# --- damaged and missing files --------------------------------------------------------------------


def test_missing_file_is_named(subset_copy: Path) -> None:
    (subset_copy / "data_batch_2").unlink()
    with pytest.raises(DatasetNotFoundError, match="Missing: data_batch_2") as info:
        load_cifar10(subset_copy, "train")
    assert str(subset_copy) in str(info.value) and "NAS_DATA_DIR" in str(info.value)
    assert load_cifar10(subset_copy, "test")[1].shape == (1017,)


def test_truncated_file_is_corrupt(subset_copy: Path) -> None:
    path = subset_copy / "data_batch_3"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptDatasetError, match="data_batch_3.*truncated") as info:
        load_cifar10(subset_copy, "train")
    assert info.value.path == path


def test_garbled_file_is_corrupt(subset_copy: Path) -> None:
    path = subset_copy / "test_batch"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CorruptDatasetError, match="test_batch"):
        load_cifar10(subset_copy, "test")


def _drop_labels(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_drop_labels, "missing key.*'labels'"),
        (lambda b: {**b, "labels": [10] + b["labels"][1:]}, r"outside 0\.\.9, first 10 at index 0"),
        (lambda b: {**b, "labels": b["labels"][:-1] + [-1]}, r"outside 0\.\.9"),
        (lambda b: {**b, "labels": b["labels"][:-1]}, "1016 labels for 1017 images"),
        (lambda b: {**b, "labels": [float(x) for x in b["labels"]]}, "not a flat list of integers"),
        (lambda b: {**b, "data": b["data"].astype(np.float32)}, "dtype float32, expected uint8"),
        (lambda b: {**b, "data": b["data"][:, :3000]}, r"shape \(1017, 3000\)"),
        (lambda b: {**b, "data": b["data"].tolist()[:2]}, "'data' is a list"),
        (lambda b: list(b.items()), "holds a list"),
    ],
)
def test_wrong_content_is_corrupt(subset_copy: Path, damage, problem: str) -> None:
    path = subset_copy / "data_batch_5"
    _write(path, damage(_raw(path)))
    with pytest.raises(CorruptDatasetError, match=f"data_batch_5: .*{problem}"):
        load_cifar10(subset_copy, "train")


def test_pickle_globals_are_refused_not_run(subset_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (subset_copy / "test_batch").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CorruptDatasetError, match="test_batch.*never contains"):
        load_cifar10(subset_copy, "test")
    assert not marker.exists()


@pytest.mark.parametrize(
    "error",
    [
        DatasetNotFoundError("CIFAR-10", [Path("a")], ["data_batch_1"], missing=["data_batch_1"]),
        CorruptDatasetError(Path("a") / "test_batch", "truncated"),
        DatasetDownloadError("http://127.0.0.1:1/x.tar.gz", "refused"),
    ],
)
def test_errors_are_dataset_errors_and_survive_pickling(error: DatasetError) -> None:
    assert isinstance(error, DatasetError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)


# --- finding the data -----------------------------------------------------------------------------


def test_nas_data_dir_finds_the_subset(data_root: Path, cifar_dir: Path, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_DATA_DIR", str(data_root))
    assert paths.data_root() == data_root
    assert find_cifar10(download=False) == cifar_dir


def test_data_dir_may_be_the_dataset_or_its_parent(tmp_path: Path, cifar_dir: Path, cache: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar10-subset").symlink_to(cifar_dir)
    assert find_cifar10(root, download=False) == root / "cifar10-subset"
    assert find_cifar10(root / "cifar10-subset", download=False) == root / "cifar10-subset"
    (root / "cifar-10-batches-py").symlink_to(cifar_dir)
    assert find_cifar10(root, download=False) == root / "cifar-10-batches-py"  # the complete set first


def test_explicit_data_dir_wins_over_nas_data_dir(data_root: Path, subset_copy: Path, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_DATA_DIR", str(data_root))
    assert find_cifar10(subset_copy, download=False) == subset_copy


def test_nothing_found_without_download(tmp_path: Path, cache: Path) -> None:
    assert paths.data_root() is None
    with pytest.raises(DatasetNotFoundError) as info:
        find_cifar10(download=False)
    message = str(info.value)
    assert str(cache / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "NAS_DATA_DIR" in message


def test_explicit_data_dir_without_data_is_an_error_not_a_download(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        find_cifar10(tmp_path / "typo", download=True)
    assert str(tmp_path / "typo" / "cifar10-subset") in str(info.value)
    assert not any(cache.iterdir()) if cache.exists() else True


def test_cache_dir_setting(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    assert paths.cache_dir() == tmp_path
    monkeypatch.delenv("NAS_CACHE_DIR")
    assert paths.cache_dir() == Path.home() / ".cache" / "nas-rl"


# --- downloading ----------------------------------------------------------------------------------


def test_download_verify_extract(web_root, cifar_dir: Path, cache: Path) -> None:
    folder, base = web_root
    md5 = _build_archive(folder / "cifar-10-python.tar.gz", cifar_dir)
    found = find_cifar10(url=f"{base}/cifar-10-python.tar.gz", md5=md5)
    assert found == cache / "cifar-10-batches-py"
    images, labels = load_cifar10(found, "train")
    expected_images, expected_labels = load_cifar10(cifar_dir, "train")
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]  # no archive, temp or staging left
    (folder / "cifar-10-python.tar.gz").unlink()
    assert find_cifar10(url=f"{base}/cifar-10-python.tar.gz", md5=md5) == found  # the cache, no second download


def test_wrong_md5_leaves_nothing_behind(web_root, cifar_dir: Path, cache: Path) -> None:
    folder, base = web_root
    actual = _build_archive(folder / "cifar-10-python.tar.gz", cifar_dir)
    with pytest.raises(CorruptDatasetError, match="cifar-10-python.tar.gz") as info:
        find_cifar10(url=f"{base}/cifar-10-python.tar.gz", md5="0" * 32)
    assert actual in str(info.value) and "0" * 32 in str(info.value)
    assert list(cache.iterdir()) == []


def test_unreachable_url_names_it(cache: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/cifar-10-python.tar.gz"
    with pytest.raises(DatasetDownloadError, match=f"cannot download {url}") as info:
        find_cifar10(url=url)
    assert list(cache.iterdir()) == []
    # a setup error: the search stops on it with this one line, not a traceback per child
    assert isinstance(info.value, SetupError) and "\n" not in str(info.value)


def test_http_error_names_the_url(web_root, cache: Path) -> None:
    url = f"{web_root[1]}/nowhere.tar.gz"
    with pytest.raises(DatasetDownloadError, match=f"cannot download {url}: HTTP Error 404"):
        find_cifar10(url=url)


@pytest.mark.parametrize("member", ["../escaped", "{tmp}/absolute-escape", "cifar-10-batches-py/../../escaped"])
def test_unsafe_archive_members_are_refused(web_root, tmp_path: Path, cache: Path, member: str) -> None:
    folder, base = web_root
    member = member.format(tmp=tmp_path)  # an absolute member points into this test's folder
    md5 = _tar_with(folder / "evil.tar.gz", member)
    with pytest.raises(CorruptDatasetError, match="unsafe path"):
        find_cifar10(url=f"{base}/evil.tar.gz", md5=md5)
    # where each member would land if written: beside the cache (relative ones) or at its absolute path
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "absolute-escape").exists()
    assert list(cache.iterdir()) == []


def test_archive_without_batches_is_corrupt(web_root, cache: Path) -> None:
    folder, base = web_root
    md5 = _tar_with(folder / "other.tar.gz", "cifar-10-batches-py/readme.txt")
    with pytest.raises(CorruptDatasetError, match="other.tar.gz: has no cifar-10-batches-py/"):
        find_cifar10(url=f"{base}/other.tar.gz", md5=md5)
    assert list(cache.iterdir()) == []


# --- train / validation split ---------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete() -> None:
    train, val = train_val_split(50_000)
    assert (len(train), len(val)) == (45_000, 5_000)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert not np.intersect1d(train, val).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(50_000))
    again_train, again_val = train_val_split(50_000, seed=0)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, train_val_split(50_000, seed=1)[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_images": 1}, "num_images must be at least 2"),
        ({"num_images": 10.0}, "num_images must be an integer"),
        ({"num_images": True}, "num_images must be an integer"),
        ({"num_images": 10, "num_val": 10}, "num_val must be smaller than num_images"),
        ({"num_images": 10, "num_val": 0}, "num_val must be at least 1"),
        ({"num_images": 10, "seed": -1}, "seed must be at least 0"),
    ],
)
def test_split_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_val_split(**kwargs)


def test_load_splits_from_the_subset(cifar_dir: Path, cache: Path) -> None:
    splits = load_cifar10_splits(cifar_dir, seed=3, download=False)
    images, labels = load_cifar10(cifar_dir, "train")
    train, val = train_val_split(5551, seed=3)
    assert splits.train_images.shape == (4996, 32, 32, 3) and splits.val_images.shape == (555, 32, 32, 3)
    np.testing.assert_array_equal(splits.train_images, images[train])
    np.testing.assert_array_equal(splits.val_labels, labels[val])
    with pytest.raises(AttributeError):
        splits.train_labels = labels  # frozen
