"""The blob store: whole-or-nothing writes, checksummed reads, behind one small interface with two backends.

`LocalBlobStore` keeps files under a directory (temp file, fsync, rename); `S3BlobStore` (worker/s3blobs.py)
keeps objects in an S3-compatible bucket. `open_blob_store(BlobConfig)` picks one from a location: a path, or
`s3://bucket/prefix`. Blob names are relative paths such as `datasets/<id>.npz`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO, TypeVar

CHUNK_BYTES = 1024 * 1024
TEMP_PREFIX = ".tmp-"
"""How the names of LocalBlobStore's temp files begin (a blob being written; left behind by a killed writer)."""
T = TypeVar("T")
logger = logging.getLogger(__name__)


class BlobError(RuntimeError):
    """A blob is missing, outside the blob store, or does not match its checksum."""


class StorageFullError(RuntimeError):
    """The blob directory's file system is full (or the user is over quota): nothing was stored."""


class BlobStoreUnavailableError(RuntimeError):
    """The blob store cannot be reached (or answers with a server error): nothing was read or written."""

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"the blob store {store} is unavailable ({reason})")
        self.store = store
        self.reason = reason


class BlobConfigError(ValueError):
    """The blob store's configuration is wrong: the message names the setting to fix."""


_FULL = (errno.ENOSPC, errno.EDQUOT)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def write_fd(fd: int, data: bytes) -> None:
    """Write all of `data` to the file descriptor `fd` (the only place blob bytes reach the disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def verified(chunks: Iterator[bytes], relative: str, sha256: str) -> bytes:
    """The concatenated `chunks`, checked against `sha256` (BlobError on a mismatch)."""
    digest = hashlib.sha256()
    parts = []
    for chunk in chunks:
        digest.update(chunk)
        parts.append(chunk)
    if digest.hexdigest() != sha256:
        raise BlobError(f"blob {relative!r} does not match its checksum")
    return b"".join(parts)


class BlobWriter:
    """The write end of a blob being written piece by piece: counts and hashes what it writes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        """Append `data` (a file-like `write`, so zipfile and NumPy can write here)."""
        write_fd(self.fd, bytes(data))
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here."""

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written so far."""
        return self._hash.hexdigest()


def verified_file(handle: BinaryIO, relative: str, sha256: str) -> BinaryIO:
    """`handle` rewound after its whole content was checked against `sha256` (read in CHUNK_BYTES pieces);
    closed and BlobError on a mismatch."""
    digest = hashlib.sha256()
    try:
        while piece := handle.read(CHUNK_BYTES):
            digest.update(piece)
        if digest.hexdigest() != sha256:
            raise BlobError(f"blob {relative!r} does not match its checksum")
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return handle


def parse_s3_location(location: str) -> tuple[str, str]:
    """(bucket, key prefix ending in / or empty) of `s3://bucket/prefix`; BlobConfigError naming the setting."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise BlobConfigError(
            f"BACKPROP_BLOB_URL: {bucket!r} is not a bucket name (3-63 lowercase letters, digits, '-', '.')"
        )
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob: its relative name, size, and seconds since it was last written."""

    name: str
    size: int
    age_seconds: float


@dataclass(frozen=True)
class BlobConfig:
    """Where blobs live: `location` is a directory path or `s3://bucket/prefix`; the rest is for S3 only.

    Credentials left None come from boto3's usual chain (environment, config files, instance roles).
    `connect_timeout` bounds each connection attempt (so an unreachable store fails a call within `attempts`
    of them, plus botocore's backoff of at most 1 s between tries), `timeout` each wait for an answer once
    connected; `attempts` is the total tries per call, the first included.
    """

    location: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str | None = None
    timeout: float = 5.0
    attempts: int = 2
    connect_timeout: float = 1.0

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")


class BlobStore(ABC):
    """Blobs addressed by a relative name; a reader sees a blob whole or not at all."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the blobs live, for messages (no secrets)."""

    @abstractmethod
    def write(self, relative: str, data: bytes) -> str:
        """Store `data` under `relative` whole or not at all; returns its sha256."""

    @abstractmethod
    def stream(self, relative: str) -> Iterator[bytes]:
        """The blob's bytes in chunks, unverified (BlobError when it is missing)."""

    @abstractmethod
    def writer(self, relative: str) -> contextlib.AbstractContextManager[BlobWriter]:
        """Write a blob piece by piece, whole or not at all: it appears when the block ends without an
        exception and not otherwise. The writer's `sha256` and `size` describe the blob afterwards."""

    def open_verified(self, relative: str, sha256: str) -> BinaryIO:
        """The blob as a readable file, its whole content checked against `sha256` first (never held in
        memory whole); the caller closes it. This copy goes to a temp file; backends with files override it."""
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
        try:
            for chunk in self.stream(relative):
                spool.write(chunk)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return verified_file(spool, relative, sha256)

    def read(self, relative: str, sha256: str) -> bytes:
        """The blob's bytes, verified against `sha256`."""
        return verified(self.stream(relative), relative, sha256)

    @abstractmethod
    def delete(self, relative: str) -> None:
        """Remove the blob if it exists."""

    @abstractmethod
    def list(self, prefix: str) -> list[BlobInfo]:
        """Every blob whose name starts with `prefix`, with its age."""

    @abstractmethod
    def remove_temp_files(self, min_age_seconds: float) -> Sequence[str]:
        """Delete what writes of this backend leave behind when they are killed (temp files, unfinished
        uploads) and that was last touched at least `min_age_seconds` ago; returns what was deleted."""

    def remove_local_temp_files(self, min_age_seconds: float) -> Sequence[str]:
        """Like `remove_temp_files`, but only what lies on this host's own disk outside the store (a worker
        on another machine cleans its own); nothing for backends whose temp files live in the store."""
        return []

    @abstractmethod
    def check(self, *, create: bool = True) -> None:
        """Verify the store is usable (creating the directory or bucket when `create`); BlobConfigError or
        BlobStoreUnavailableError naming what to fix."""


class LocalBlobStore(BlobStore):
    """Files under `root`: written to a temp file, fsynced and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def description(self) -> str:
        return str(self.root)

    def path(self, relative: str) -> Path:
        """The absolute path of `relative`, refusing anything that escapes the root."""
        root = self.root.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise BlobError(f"blob path {relative!r} is outside the blob directory")
        return path

    def write(self, relative: str, data: bytes) -> str:
        """Write `data` atomically (temp file, fsync, rename, fsync dir); returns its sha256."""
        with self.writer(relative) as out:
            out.write(data)
        return out.sha256

    @contextlib.contextmanager
    def writer(self, relative: str) -> Iterator[BlobWriter]:
        """The pieces go to a temp file that is fsync'd and renamed into place when the block ends without an
        exception, and removed otherwise (a full disk raises StorageFullError, other I/O errors their OSError)."""
        path = self.path(relative)
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
            try:
                yield BlobWriter(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_name, path)
            tmp_name = None
        except BaseException as exc:
            if tmp_name is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
            if isinstance(exc, OSError) and exc.errno in _FULL:
                raise StorageFullError(f"no space left to write {relative!r} ({exc.strerror})") from exc
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def open_verified(self, relative: str, sha256: str) -> BinaryIO:
        """The blob's own file, opened and verified; blobs are replaced by rename, never rewritten, so the open
        file stays the verified one."""
        try:
            handle = self.path(relative).open("rb")
        except FileNotFoundError:
            raise BlobError(f"blob {relative!r} is missing") from None
        return verified_file(handle, relative, sha256)

    def stream(self, relative: str) -> Iterator[bytes]:
        path = self.path(relative)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise BlobError(f"blob {relative!r} is missing") from None
        return self._chunks(handle)

    @staticmethod
    def _chunks(handle: BinaryIO) -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def delete(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(relative).unlink()

    def list(self, prefix: str) -> list[BlobInfo]:
        directory, _, start = prefix.rpartition("/")
        folder = self.path(directory) if directory else self.root.resolve()
        if not folder.is_dir():
            return []
        now = time.time()
        found = []
        for path in sorted(folder.iterdir()):
            if not path.name.startswith(start) or path.name.startswith(TEMP_PREFIX) or not path.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                name = f"{directory}/{path.name}" if directory else path.name
                found.append(BlobInfo(name, stat.st_size, max(0.0, now - stat.st_mtime)))
        return found

    def remove_temp_files(self, min_age_seconds: float) -> Sequence[str]:
        """The `.tmp-*` files anywhere under the root, last written at least `min_age_seconds` ago."""
        root = self.root.resolve()
        if not root.is_dir():
            return []
        removed = []
        for folder, _, names in os.walk(root):
            for name in sorted(names):
                if name.startswith(TEMP_PREFIX):
                    path = Path(folder) / name
                    if remove_if_stale(path, min_age_seconds):
                        removed.append(str(path.relative_to(root)))
        return removed

    def check(self, *, create: bool = True) -> None:
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            if not self.root.is_dir():
                raise BlobConfigError(f"BACKPROP_BLOB_URL: {self.root} is not a directory")
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise BlobConfigError(f"BACKPROP_BLOB_URL: {self.root} is not writable")
        except OSError as exc:
            raise BlobConfigError(f"BACKPROP_BLOB_URL: cannot use {self.root} ({exc.strerror})") from exc


def remove_if_stale(path: Path, min_age_seconds: float) -> bool:
    """Delete the regular file `path` if it was last written at least `min_age_seconds` ago and belongs to this
    user; whether it was deleted (a file already gone, or not ours to delete, is left alone)."""
    try:
        stat = path.lstat()
        if not S_ISREG(stat.st_mode) or stat.st_uid != os.getuid() or time.time() - stat.st_mtime < min_age_seconds:
            return False
        path.unlink()
    except (FileNotFoundError, PermissionError):
        return False
    return True


def retry_unavailable(call: Callable[[], T], *, seconds: float, what: str, first_delay: float = 0.5) -> T:
    """`call()`, retried with exponential backoff (0.5 s doubling, at most 8 s apart) while the blob store is
    unavailable, for up to `seconds`; then its BlobStoreUnavailableError."""
    deadline = time.monotonic() + seconds
    delay = first_delay
    while True:
        try:
            return call()
        except BlobStoreUnavailableError as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: %s; retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def open_blob_store(config: BlobConfig | Path | str) -> BlobStore:
    """The blob store at `config` (a BlobConfig, or a directory path)."""
    if not isinstance(config, BlobConfig):
        config = BlobConfig(str(config))
    if config.is_s3:
        from worker.s3blobs import S3BlobStore  # boto3 is imported only where S3 is used

        return S3BlobStore(config)
    location = config.location.removeprefix("file://")
    return LocalBlobStore(Path(location))
