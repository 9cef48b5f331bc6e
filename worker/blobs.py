"""Blob files under the blob directory: atomic writes, checksummed reads."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path


class BlobError(RuntimeError):
    """A blob is missing, outside the blob directory, or does not match its checksum."""


class StorageFullError(RuntimeError):
    """The blob directory's file system is full (or the user is over quota): nothing was stored."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_fd(fd: int, data: bytes) -> None:
    """Write all of `data` to the file descriptor `fd` (the only place blob bytes reach the disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


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
