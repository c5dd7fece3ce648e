"""Downloading and unpacking dataset archives safely, shared by the dataset readers.

Every step leaves nothing behind when it fails: a download goes to a temp file that is renamed only
after its checksum matches, archives are extracted into a staging folder that is removed afterwards,
and members that could write outside that folder (absolute paths, ``..``, links, devices) are refused.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from nas_env.data.paths import CorruptDatasetError, DatasetDownloadError

DOWNLOAD_TIMEOUT_S = 60.0
CHUNK = 1 << 20

# What a damaged compressed tar raises while it is read (truncated, bad CRC, garbled deflate data).
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes with a hashlib algorithm such as 'sha256' or 'md5'."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, out: BinaryIO, algorithm: str = "sha256", timeout: float | None = None) -> str:
    """Stream url into out with a progress bar on stderr and return the hex digest of the bytes.

    Network and HTTP failures raise DatasetDownloadError naming the url; the timeout (seconds, default
    DOWNLOAD_TIMEOUT_S) applies to connecting and to each read.
    """
    digest = hashlib.new(algorithm)
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url}", file=sys.stderr) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the open response
        raise DatasetDownloadError(url, str(exc)) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise DatasetDownloadError(url, str(getattr(exc, "reason", exc))) from exc
    return digest.hexdigest()


def download(
    url: str,
    target: str | Path,
    checksum: str | None = None,
    algorithm: str = "sha256",
    timeout: float | None = None,
) -> str:
    """Fetch url to target atomically (temp file beside it, then rename) and return its hex digest.

    With a checksum, a mismatch is a CorruptDatasetError naming target, and nothing is kept; the
    folder of target must exist.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = fetch(url, out, algorithm, timeout)
        if checksum is not None and actual != checksum.lower():
            raise CorruptDatasetError(
                target,
                f"downloaded from {url} with {algorithm} {actual}, expected {checksum.lower()}; the file was deleted",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return actual


def check_member(archive: str | Path, member: tarfile.TarInfo) -> None:
    """CorruptDatasetError unless member is a plain file or folder with a relative path inside the archive."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise CorruptDatasetError(archive, f"member {member.name!r} has an unsafe path (absolute or with '..')")
    if not (member.isfile() or member.isdir()):
        raise CorruptDatasetError(archive, f"member {member.name!r} is a link or special file, refused")


def extract_tar(archive: str | Path, destination: str | Path, members: Iterable[str] | None = None) -> list[Path]:
    """Extract an archive's members (all, or only those named) under destination; return the paths written.

    Names are compared after normalisation, so ``./a/b`` and ``a/b`` are the same member. Every member
    extracted is checked first (see check_member); a named member that is absent, or not a file, is a
    CorruptDatasetError naming the archive, as is an unreadable archive. Files get default permissions
    and no metadata. Extract into a fresh folder (see staging_folder): a failure may leave part of it.
    """
    archive, destination = Path(archive), Path(destination)
    wanted = None if members is None else {_normalised(name): name for name in members}
    try:
        with tarfile.open(archive, "r:*") as tar:
            if wanted is None:
                chosen = tar.getmembers()
            else:
                found: dict[tuple[str, ...], tarfile.TarInfo] = {}
                for member in tar.getmembers():
                    key = _normalised(member.name)
                    if key in wanted:
                        found[key] = member  # a later duplicate wins, as in tar itself
                absent = [name for key, name in wanted.items() if key not in found]
                if absent:
                    raise CorruptDatasetError(archive, f"has no member(s) {', '.join(absent)}")
                chosen = [found[key] for key in wanted]
            for member in chosen:
                check_member(archive, member)
                if wanted is not None and not member.isfile():
                    raise CorruptDatasetError(archive, f"member {member.name!r} is not a file")
            return [_extract_member(tar, member, destination) for member in chosen]
    except _TAR_ERRORS as exc:
        raise CorruptDatasetError(archive, f"not a readable tar archive ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def staging_folder(parent: str | Path) -> Iterator[Path]:
    """A new empty hidden folder inside parent (same file system, so moves out of it are atomic), removed on exit."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_into_place(source: str | Path, target: str | Path) -> Path:
    """Move the folder source to target in one rename, first removing whatever is at target; return target."""
    target = Path(target)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(source, target)
    return target


def _normalised(name: str) -> tuple[str, ...]:
    """A member name as path parts, without '.' parts or slashes, for comparing names."""
    return PurePosixPath(name).parts


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, destination: Path) -> Path:
    """Write one checked file or folder member under destination and return its path."""
    path = destination.joinpath(*PurePosixPath(member.name).parts)
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tar.extractfile(member) as source, path.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
    return path
