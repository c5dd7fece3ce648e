"""Penn Treebank, word level (Mikolov's split): find it, download it, verify it, read it, batch it.

This is the corpus of the recurrent-cell searches (Zoph & Le, then ENAS and DARTS): a 10,000-entry vocabulary, rare words
already replaced by ``<unk>``, one sentence per line. The three official files are checked against
their SHA256, and read into token ids with a vocabulary built from the training file in order of
first appearance, so ids are the same on every machine; ``<eos>`` ends every line.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import os
import types
import urllib.parse
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from nas_env.data.download import download as _download_file
from nas_env.data.download import extract_tar, file_digest, move_into_place, staging_folder
from nas_env.data.paths import CorruptDatasetError, DatasetNotFoundError, cache_dir, locate_dataset

if TYPE_CHECKING:
    import torch

PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
PTB_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
EOS = "<eos>"
FOLDER_NAME = "ptb"
# Where the three files sit inside the official simple-examples.tgz.
ARCHIVE_MEMBERS = tuple(f"./simple-examples/data/{name}" for name in PTB_FILES)
DATASET = "Penn Treebank"


@dataclasses.dataclass(frozen=True, eq=False)
class PTBCorpus:
    """The three splits as 1-D int64 token-id arrays (read-only) and the vocabulary (id -> word)."""

    vocab: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @functools.cached_property
    def word_to_id(self) -> Mapping[str, int]:
        """The inverse of vocab (word -> id), read-only."""
        return types.MappingProxyType({word: i for i, word in enumerate(self.vocab)})

    @property
    def vocab_size(self) -> int:
        """The number of word types, ``<eos>`` included (10,000 for the official files)."""
        return len(self.vocab)


def find_ptb(data_dir: str | Path | None = None, download: bool = True, url: str = PTB_URL) -> Path:
    """The folder holding the three PTB files: data_dir, then NAS_DATA_DIR, then the cache, then a download.

    A folder matches if it holds the files itself or in a ``ptb/`` subfolder. An explicit ``data_dir``
    that holds no PTB is an error at once (a typo must not start a download). A download extracts only
    the three files into ``cache_dir()/ptb``, after checking their SHA256, and deletes the archive.
    """
    fetch = (lambda: _download_and_extract(url, cache_dir())) if download else None
    return locate_dataset(DATASET, PTB_FILES, data_dir, _candidates, _has_files, cache_dir() / FOLDER_NAME, fetch,
                          missing=_missing)  # fmt: skip


def load_ptb(directory: str | Path, verify: bool = True) -> PTBCorpus:
    """Read ptb.{train,valid,test}.txt from directory into a PTBCorpus, checking each file (SHA256 if verify)."""
    directory = Path(directory)
    missing = [name for name in PTB_FILES if not (directory / name).is_file()]
    if missing:
        raise DatasetNotFoundError(DATASET, [directory], PTB_FILES, missing=missing)
    train_path, valid_path, test_path = (directory / name for name in PTB_FILES)
    train_tokens = _read_tokens(train_path, verify)[1]
    vocab = tuple(dict.fromkeys(train_tokens))
    word_to_id = {word: i for i, word in enumerate(vocab)}
    train = _to_ids(train_tokens, word_to_id)
    valid = _ids_known_to_train(valid_path, verify, word_to_id)
    test = _ids_known_to_train(test_path, verify, word_to_id)
    for ids in (train, valid, test):
        ids.setflags(write=False)
    return PTBCorpus(vocab, train, valid, test)


def load_ptb_corpus(data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> PTBCorpus:
    """Find PTB (see find_ptb) and read it (see load_ptb)."""
    return load_ptb(find_ptb(data_dir, download=download), verify=verify)


def batchify(ids: np.ndarray | torch.Tensor, batch_size: int) -> torch.Tensor:
    """Lay a 1-D token stream out as (T, batch_size) int64, column j the j-th contiguous slice, tail trimmed."""
    import torch  # here, so that reading data does not pay for importing torch

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
    if isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}")
        data = ids.detach().to(torch.int64)
    else:
        array = np.asarray(ids)
        if array.dtype.kind not in "iu":
            raise ValueError(f"ids must be integer token ids, got dtype {array.dtype}")
        data = torch.from_numpy(np.array(array, dtype=np.int64))  # a writable copy
    if data.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(data.shape)}")
    steps = data.numel() // batch_size
    if steps < 1:
        raise ValueError(f"too few tokens for batch_size {batch_size}: {data.numel()} (need at least {batch_size})")
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous()


def _candidates(folder: Path) -> list[Path]:
    """The folders that may hold the files, given the dataset folder or a folder of dataset folders."""
    return [folder, folder / FOLDER_NAME]


def _has_files(folder: Path) -> bool:
    """Whether all three PTB files are present in folder."""
    return all((folder / name).is_file() for name in PTB_FILES)


def _missing(folders: list[Path]) -> list[str]:
    """The missing files of the most complete folder searched, as paths; all three names if none has any."""
    best = max(folders, key=lambda f: sum((f / name).is_file() for name in PTB_FILES))
    lacking = [name for name in PTB_FILES if not (best / name).is_file()]
    return list(PTB_FILES) if len(lacking) == len(PTB_FILES) else [str(best / name) for name in lacking]


def _read_tokens(path: Path, verify: bool) -> tuple[list[str], list[str]]:
    """(lines, tokens) of a checked file: every line's words followed by EOS, in order."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptDatasetError(path, f"cannot be read ({exc.strerror or exc})") from exc
    expected = PTB_SHA256.get(path.name)
    if verify and expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CorruptDatasetError(
                path,
                f"SHA256 checksum differs from the official {path.name} (got {actual}, expected {expected});"
                " pass verify=False to read it anyway",
            )
    if not data:
        raise CorruptDatasetError(path, "line 1: the file is empty, expected lines of space-separated words")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}: {exc.reason})"
        raise CorruptDatasetError(path, problem) from exc
    if "\r" in text:  # read lines as Python's text mode does
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    lines = text[:-1].split("\n")
    tokens = text.replace("\n", f" {EOS} ").split()
    if len(tokens) == len(lines):  # one EOS per line and nothing else
        raise CorruptDatasetError(path, f"lines 1-{len(lines)}: only blank lines, no words")
    return lines, tokens


def _to_ids(tokens: list[str], word_to_id: dict[str, int]) -> np.ndarray:
    """Token ids as int64, -1 for a word not in word_to_id."""
    return np.fromiter(map(word_to_id.get, tokens, itertools.repeat(-1)), np.int64, len(tokens))


def _ids_known_to_train(path: Path, verify: bool, word_to_id: dict[str, int]) -> np.ndarray:
    """The ids of a valid or test file; a word absent from train is a CorruptDatasetError naming its line."""
    lines, tokens = _read_tokens(path, verify)
    ids = _to_ids(tokens, word_to_id)
    unknown = np.flatnonzero(ids < 0)
    if unknown.size:
        word = tokens[unknown[0]]
        line = next(number for number, text in enumerate(lines, 1) if word in text.split())
        count = len({tokens[i] for i in unknown})
        raise CorruptDatasetError(
            path, f"line {line}: word {word!r} does not occur in ptb.train.txt ({count} unknown word type(s) in all)"
        )
    return ids


def _download_and_extract(url: str, destination: Path) -> Path:
    """Download the archive into destination, extract and verify the three files into destination/ptb."""
    destination.mkdir(parents=True, exist_ok=True)
    archive = destination / (PurePosixPath(urllib.parse.urlsplit(url).path).name or "simple-examples.tgz")
    _download_file(url, archive)  # the archive's own checksum is unknown: the files are verified instead
    try:
        target = destination / FOLDER_NAME
        with staging_folder(destination) as staging:
            extracted = extract_tar(archive, staging, members=ARCHIVE_MEMBERS)
            folder = staging / FOLDER_NAME
            folder.mkdir()
            for member, path in zip(ARCHIVE_MEMBERS, extracted):
                name = PurePosixPath(member).name
                actual = file_digest(path, "sha256")
                if actual != PTB_SHA256[name]:
                    raise CorruptDatasetError(
                        archive,
                        f"member {member} has SHA256 {actual}, expected {PTB_SHA256[name]} (the official {name});"
                        f" downloaded from {url}, nothing was kept",
                    )
                os.replace(path, folder / name)
            if not _has_files(target):  # another process may have finished first
                move_into_place(folder, target)
        return target
    finally:
        archive.unlink(missing_ok=True)
