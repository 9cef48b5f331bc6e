"""Blob files under the blob directory: atomic writes, checksummed reads."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class BlobError(RuntimeError):
    """A blob is missing, outside the blob directory, or does not match its checksum."""


class StorageFullError(RuntimeError):
    """The blob directory's file system is full (or the user is over quota): nothing was stored."""


_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_PIECE = 1024 * 1024


def write_fd(fd: int, data: bytes) -> None:
    """Write all of `data` to the file descriptor `fd` (the only place blob bytes reach the disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


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


class BlobStore:
    """Files addressed by a path relative to `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, relative: str) -> Path:
        """The absolute path of `relative`, refusing anything that escapes the root."""
        root = self.root.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise BlobError(f"blob path {relative!r} is outside the blob directory")
        return path

    def write(self, relative: str, data: bytes) -> str:
        """Write `data` atomically (temp file, fsync, rename, fsync dir); returns its sha256.

        Any failure removes the temp file, so the blob is either whole or absent; a full disk raises
        StorageFullError, other I/O errors their OSError.
        """
        path = self.path(relative)
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                write_fd(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_name, path)
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
        return sha256_hex(data)

    @contextlib.contextmanager
    def writer(self, relative: str) -> Iterator[BlobWriter]:
        """Write a blob piece by piece, whole or not at all: the pieces go to a temp file that is fsync'd and
        renamed into place when the block ends without an exception, and removed otherwise (a full disk
        raises StorageFullError). The writer's `sha256` and `size` describe the blob afterwards."""
        path = self.path(relative)
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
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
        """The blob opened for reading after its whole content was checked against `sha256` (read in 1 MiB
        pieces, never whole); the caller closes it. Blobs are replaced by rename, never rewritten, so the
        open file stays the verified one."""
        path = self.path(relative)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise BlobError(f"blob {relative!r} is missing") from None
        digest = hashlib.sha256()
        try:
            while piece := handle.read(_READ_PIECE):
                digest.update(piece)
            if digest.hexdigest() != sha256:
                raise BlobError(f"blob {relative!r} does not match its checksum")
            handle.seek(0)
        except BaseException:
            handle.close()
            raise
        return handle

    def read(self, relative: str, sha256: str) -> bytes:
        """The blob's bytes, verified against `sha256`."""
        path = self.path(relative)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {relative!r} is missing") from None
        if sha256_hex(data) != sha256:
            raise BlobError(f"blob {relative!r} does not match its checksum")
        return data

    def delete(self, relative: str) -> None:
        """Remove the blob if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.path(relative).unlink()
