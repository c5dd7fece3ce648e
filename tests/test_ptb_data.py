"""Penn Treebank lookup, verification, reading, batching and download, on the real files and a real HTTP server."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_env.data import (
    PTB_URL,
    CorruptDatasetError,
    DatasetDownloadError,
    DatasetNotFoundError,
    PTBCorpus,
    batchify,
    find_ptb,
    load_ptb,
    load_ptb_corpus,
)
from nas_env.data.download import download, extract_tar
from nas_env.data.ptb import EOS, PTB_FILES, PTB_SHA256

MEMBER_DIR = "./simple-examples/data"


# --- helpers and fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ptb_dir(data_root: Path) -> Path:
    folder = data_root / "ptb"
    if not all((folder / name).is_file() for name in PTB_FILES):
        pytest.fail(f"real PTB files not found under {folder}: set NAS_DATA_DIR to the folder holding ptb/")
    return folder


@pytest.fixture(scope="module")
def corpus(ptb_dir: Path) -> PTBCorpus:
    return load_ptb(ptb_dir)


@pytest.fixture
def ptb_copy(tmp_path: Path, ptb_dir: Path) -> Path:
    """A writable copy of the real files, to damage."""
    folder = tmp_path / "ptb-copy"
    folder.mkdir()
    for name in PTB_FILES:
        shutil.copyfile(ptb_dir / name, folder / name)
    return folder


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _build_archive(path: Path, source: Path, files: tuple[str, ...] = PTB_FILES) -> None:
    """Write a simple-examples.tgz laid out like the official one: the files under ./simple-examples/data/,
    beside other members (a model file, a symlink) that must not be extracted."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        _add_bytes(tar, "./simple-examples/models/model.txt", b"not PTB\n")
        link = tarfile.TarInfo("./simple-examples/data/latest")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        for name in files:
            tar.add(source / name, arcname=f"{MEMBER_DIR}/{name}")


def _replace_once(path: Path, old: bytes, new: bytes, start: int = 0) -> int:
    """Replace the first occurrence of old at or after start in a file; return its offset."""
    data = path.read_bytes()
    offset = data.index(old, start)
    path.write_bytes(data[:offset] + new + data[offset + len(old) :])
    return offset


# --- reading the real files -----------------------------------------------------------------------


def test_real_token_counts_and_vocabulary(corpus: PTBCorpus) -> None:
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929_589, 73_760, 82_430)
    assert corpus.vocab_size == len(corpus.vocab) == 10_000
    assert EOS in corpus.vocab and len(set(corpus.vocab)) == 10_000
    for ids in (corpus.train, corpus.valid, corpus.test):
        assert ids.dtype == np.int64 and ids.ndim == 1
        assert 0 <= ids.min() and ids.max() < corpus.vocab_size
    assert np.array_equal(np.unique(corpus.train), np.arange(10_000))  # the vocabulary is train's words
    eos = corpus.word_to_id[EOS]
    assert [int((ids == eos).sum()) for ids in (corpus.train, corpus.valid, corpus.test)] == [42_068, 3_370, 3_761]


def test_vocabulary_is_deterministic_first_appearance(corpus: PTBCorpus, ptb_dir: Path) -> None:
    again = load_ptb(ptb_dir, verify=False)
    assert again.vocab == corpus.vocab
    for a, b in ((again.train, corpus.train), (again.valid, corpus.valid), (again.test, corpus.test)):
        np.testing.assert_array_equal(a, b)
    lines = (ptb_dir / "ptb.train.txt").read_text().splitlines()
    first = lines[0].split() + [EOS]
    assert len(set(first)) == len(first) == 25
    assert corpus.vocab[:25] == tuple(first) and corpus.train[:25].tolist() == list(range(25))
    second = lines[1].split() + [EOS]
    assert [corpus.vocab[i] for i in corpus.train[25 : 25 + len(second)]] == second
    test_first = (ptb_dir / "ptb.test.txt").read_text().splitlines()[0].split() + [EOS]
    assert [corpus.vocab[i] for i in corpus.test[: len(test_first)]] == test_first


def test_word_to_id_inverts_vocab_and_corpus_is_read_only(corpus: PTBCorpus) -> None:
    assert all(corpus.word_to_id[word] == i for i, word in enumerate(corpus.vocab))
    assert len(corpus.word_to_id) == corpus.vocab_size
    with pytest.raises(TypeError):
        corpus.word_to_id["new"] = 1  # type: ignore[index]
    with pytest.raises(ValueError):
        corpus.train[0] = 1
    with pytest.raises(AttributeError):
        corpus.vocab = ()  # frozen


# --- batchify -------------------------------------------------------------------------------------


def test_batchify_layout() -> None:
    out = batchify(np.arange(27, dtype=np.int32), 4)
    assert out.dtype == torch.int64 and out.shape == (6, 4) and out.is_contiguous()
    assert out.tolist() == [[t, t + 6, t + 12, t + 18] for t in range(6)]  # tokens 24..26 trimmed
    assert torch.equal(batchify(torch.arange(27), 4), out)
    assert batchify(np.arange(5), 5).shape == (1, 5) and batchify(np.arange(5), 1).shape == (5, 1)


def test_batchify_real_train_columns_are_contiguous_slices(corpus: PTBCorpus) -> None:
    out = batchify(corpus.train, 20)
    steps = len(corpus.train) // 20
    assert out.shape == (steps, 20) == (46_479, 20)
    for j in (0, 7, 19):
        np.testing.assert_array_equal(out[:, j].numpy(), corpus.train[j * steps : (j + 1) * steps])
    assert not corpus.train.flags.writeable  # the corpus stays read-only; the batch is a copy
    out[0, 0] = -1
    assert corpus.train[0] == 0


@pytest.mark.parametrize(
    ("ids", "batch_size", "message"),
    [
        (np.arange(10), 0, "batch_size must be an integer of at least 1"),
        (np.arange(10), True, "batch_size must be an integer"),
        (np.arange(10), 2.0, "batch_size must be an integer"),
        (np.arange(3), 4, "too few tokens for batch_size 4: 3"),
        (np.arange(0), 1, "too few tokens"),
        (np.arange(10).reshape(2, 5), 2, r"ids must be 1-D, got shape \(2, 5\)"),
        (np.arange(10.0), 2, "ids must be integer token ids, got dtype float64"),
        (torch.arange(10.0), 2, "ids must be integer token ids, got dtype torch.float32"),
    ],
)
def test_batchify_rejects_bad_arguments(ids, batch_size, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batchify(ids, batch_size)


# --- damaged and missing files --------------------------------------------------------------------


def test_one_changed_byte_fails_verification_and_reads_without_it(ptb_copy: Path, corpus: PTBCorpus) -> None:
    path = ptb_copy / "ptb.test.txt"
    _replace_once(path, b" the ", b" she ")
    with pytest.raises(CorruptDatasetError, match=r"ptb\.test\.txt: SHA256 checksum differs.*verify=False") as info:
        load_ptb(ptb_copy)
    assert info.value.path == path and PTB_SHA256["ptb.test.txt"] in str(info.value)
    damaged = load_ptb(ptb_copy, verify=False)
    differ = np.flatnonzero(damaged.test != corpus.test)
    assert len(differ) == 1 and damaged.vocab == corpus.vocab
    assert corpus.vocab[corpus.test[differ[0]]] == "the" and damaged.vocab[damaged.test[differ[0]]] == "she"


def test_non_utf8_names_file_and_line(ptb_copy: Path) -> None:
    path = ptb_copy / "ptb.valid.txt"
    data = path.read_bytes()
    offset = data.index(b"viewers")  # on line 3
    path.write_bytes(data[:offset] + b"\xff" + data[offset + 1 :])
    with pytest.raises(CorruptDatasetError, match=r"ptb\.valid\.txt: line 3: not UTF-8 text \(byte 0xff") as info:
        load_ptb(ptb_copy, verify=False)
    assert info.value.path == path
    with pytest.raises(CorruptDatasetError, match=r"ptb\.valid\.txt: SHA256 checksum differs"):
        load_ptb(ptb_copy)  # verification comes first


def test_empty_and_blank_files_are_corrupt(ptb_copy: Path) -> None:
    path = ptb_copy / "ptb.train.txt"
    path.write_bytes(b"")
    with pytest.raises(CorruptDatasetError, match=r"ptb\.train\.txt: line 1: the file is empty"):
        load_ptb(ptb_copy, verify=False)
    path.write_bytes(b"\n \n\n")
    with pytest.raises(CorruptDatasetError, match=r"ptb\.train\.txt: lines 1-3: only blank lines, no words"):
        load_ptb(ptb_copy, verify=False)


def test_word_missing_from_train_names_file_line_and_word(ptb_copy: Path) -> None:
    path = ptb_copy / "ptb.valid.txt"
    _replace_once(path, b" viewers ", b" zzyzxq ")  # line 3
    with pytest.raises(
        CorruptDatasetError, match=r"ptb\.valid\.txt: line 3: word 'zzyzxq' does not occur in ptb\.train\.txt"
    ) as info:
        load_ptb(ptb_copy, verify=False)
    assert info.value.path == path


def test_missing_file_is_named(ptb_copy: Path) -> None:
    (ptb_copy / "ptb.test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"Missing: ptb\.test\.txt\.") as info:
        load_ptb(ptb_copy)
    assert str(ptb_copy) in str(info.value) and info.value.missing == ("ptb.test.txt",)


def test_line_endings_and_missing_final_newline(tmp_path: Path) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "ptb.train.txt").write_bytes(b" a b \r\n b c\rd a")
    (folder / "ptb.valid.txt").write_bytes(b"c a\n\n")
    (folder / "ptb.test.txt").write_bytes(b"d\n")
    with pytest.raises(CorruptDatasetError, match=r"ptb\.train\.txt: SHA256 checksum differs"):
        load_ptb(folder)  # unofficial content under official names
    small = load_ptb(folder, verify=False)
    assert small.vocab == ("a", "b", EOS, "c", "d")
    assert small.train.tolist() == [0, 1, 2, 1, 3, 2, 4, 0, 2]
    assert small.valid.tolist() == [3, 0, 2, 2] and small.test.tolist() == [4, 2]


# --- finding the data -----------------------------------------------------------------------------


def test_nas_data_dir_finds_ptb(data_root: Path, ptb_dir: Path, cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_DATA_DIR", str(data_root))
    assert find_ptb(download=False) == ptb_dir
    assert load_ptb_corpus(download=False).vocab_size == 10_000
    assert not cache.exists()


def test_data_dir_may_be_the_dataset_or_its_parent(tmp_path: Path, ptb_dir: Path, cache: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ptb").symlink_to(ptb_dir)
    assert find_ptb(root, download=False) == root / "ptb"
    assert find_ptb(root / "ptb", download=False) == root / "ptb"


def test_explicit_data_dir_without_data_is_an_error_not_a_download(
    tmp_path: Path, cache: Path, closed_port: int
) -> None:
    url = f"http://127.0.0.1:{closed_port}/simple-examples.tgz"  # a download would fail differently
    with pytest.raises(DatasetNotFoundError) as info:
        find_ptb(tmp_path / "typo", download=True, url=url)
    message = str(info.value)
    assert str(tmp_path / "typo") in message and str(tmp_path / "typo" / "ptb") in message
    assert "Missing: ptb.train.txt, ptb.valid.txt, ptb.test.txt" in message
    assert not cache.exists()


def test_partial_folder_names_the_missing_file(ptb_copy: Path, cache: Path) -> None:
    (ptb_copy / "ptb.valid.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=f"Missing: {ptb_copy / 'ptb.valid.txt'}"):
        find_ptb(ptb_copy)


def test_nothing_found_without_download(cache: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        find_ptb(download=False)
    message = str(info.value)
    assert str(cache / "ptb") in message and "ptb.train.txt" in message and "NAS_DATA_DIR" in message


def test_official_url() -> None:
    assert PTB_URL == "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"


# --- downloading ----------------------------------------------------------------------------------


def test_download_extracts_only_the_verified_files(web_root, ptb_dir: Path, cache: Path) -> None:
    folder, base = web_root
    _build_archive(folder / "simple-examples.tgz", ptb_dir)
    url = f"{base}/simple-examples.tgz"
    found = find_ptb(url=url)
    assert found == cache / "ptb"
    assert sorted(p.name for p in cache.iterdir()) == ["ptb"]  # no archive, temp or staging left
    assert sorted(p.name for p in found.iterdir()) == sorted(PTB_FILES)  # nothing but the three files
    for name in PTB_FILES:
        assert (found / name).read_bytes() == (ptb_dir / name).read_bytes()
    (folder / "simple-examples.tgz").unlink()
    assert find_ptb(url=url) == found  # the cache, no second download
    assert len(load_ptb_corpus().train) == 929_589


def test_damaged_file_in_archive_leaves_nothing(web_root, ptb_copy: Path, cache: Path) -> None:
    folder, base = web_root
    _replace_once(ptb_copy / "ptb.valid.txt", b" viewers ", b" viewerz ")
    _build_archive(folder / "simple-examples.tgz", ptb_copy)
    actual = hashlib.sha256((ptb_copy / "ptb.valid.txt").read_bytes()).hexdigest()
    member = r"simple-examples\.tgz: member \./simple-examples/data/ptb\.valid\.txt has SHA256"
    with pytest.raises(CorruptDatasetError, match=member) as info:
        find_ptb(url=f"{base}/simple-examples.tgz")
    assert actual in str(info.value) and PTB_SHA256["ptb.valid.txt"] in str(info.value)
    assert list(cache.iterdir()) == []


def test_archive_without_a_file_leaves_nothing(web_root, ptb_dir: Path, cache: Path) -> None:
    folder, base = web_root
    _build_archive(folder / "simple-examples.tgz", ptb_dir, files=PTB_FILES[:2])
    with pytest.raises(CorruptDatasetError, match=r"has no member\(s\) \./simple-examples/data/ptb\.test\.txt"):
        find_ptb(url=f"{base}/simple-examples.tgz")
    assert list(cache.iterdir()) == []


def test_garbage_archive_leaves_nothing(web_root, cache: Path) -> None:
    folder, base = web_root
    (folder / "simple-examples.tgz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)
    with pytest.raises(CorruptDatasetError, match="not a readable tar archive"):
        find_ptb(url=f"{base}/simple-examples.tgz")
    assert list(cache.iterdir()) == []


def test_unreachable_url_names_it(cache: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/simple-examples.tgz"
    with pytest.raises(DatasetDownloadError, match=f"cannot download {url}"):
        find_ptb(url=url)
    assert list(cache.iterdir()) == []


def test_http_error_names_the_url(web_root, cache: Path) -> None:
    url = f"{web_root[1]}/nowhere.tgz"
    with pytest.raises(DatasetDownloadError, match=f"cannot download {url}: HTTP Error 404"):
        find_ptb(url=url)
    assert list(cache.iterdir()) == []


# --- the shared download helpers ------------------------------------------------------------------


def test_download_checks_sha256_and_keeps_nothing_on_mismatch(web_root, tmp_path: Path) -> None:
    folder, base = web_root
    (folder / "f.bin").write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    out = tmp_path / "out"
    out.mkdir()
    assert download(f"{base}/f.bin", out / "f.bin", checksum=good.upper(), algorithm="sha256") == good
    assert (out / "f.bin").read_bytes() == b"payload"
    with pytest.raises(CorruptDatasetError, match=f"g.bin: downloaded from .* with sha256 {good}, expected 0+;"):
        download(f"{base}/f.bin", out / "g.bin", checksum="0" * 64, algorithm="sha256")
    assert sorted(p.name for p in out.iterdir()) == ["f.bin"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("../escaped", "unsafe path"), ("{tmp}/escaped", "unsafe path"), ("a/../../escaped", "unsafe path")],
)
def test_extract_refuses_unsafe_selected_members(tmp_path: Path, name: str, problem: str) -> None:
    name = name.format(tmp=tmp_path)  # every member, if written, would land at tmp_path/escaped
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        _add_bytes(tar, name, b"evil")
    (tmp_path / "dest").mkdir()
    with pytest.raises(CorruptDatasetError, match=problem):
        extract_tar(archive, tmp_path / "dest", members=[name])
    with pytest.raises(CorruptDatasetError, match=problem):
        extract_tar(archive, tmp_path / "dest")
    assert not (tmp_path / "escaped").exists() and list((tmp_path / "dest").iterdir()) == []


def test_extract_refuses_a_selected_link(tmp_path: Path) -> None:
    archive = tmp_path / "links.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("./data/file.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "dest").mkdir()
    with pytest.raises(CorruptDatasetError, match="link or special file"):
        extract_tar(archive, tmp_path / "dest", members=["data/file.txt"])
    assert list((tmp_path / "dest").iterdir()) == []
