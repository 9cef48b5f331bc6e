"""The blob layer on a full disk: a write either lands whole or leaves nothing, and says the disk is full."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from worker import blobs
from worker.blobs import BlobStore, StorageFullError


def _fail_halfway(code: int) -> object:
    def write_fd(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])  # some bytes reach the disk, then it is full
        raise OSError(code, os.strerror(code))

    return write_fd


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_blob_write_full_disk_raises_storage_full_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path)
    monkeypatch.setattr(blobs, "write_fd", _fail_halfway(errno.ENOSPC))
    with pytest.raises(StorageFullError, match="no space left"):
        store.write("datasets/a.npz", b"x" * 10_000)
    assert _files(tmp_path) == []


def test_blob_write_full_disk_keeps_the_previous_blob_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path)
    sha256 = store.write("models/m.npz", b"old" * 100)
    monkeypatch.setattr(blobs, "write_fd", _fail_halfway(errno.EDQUOT))
    with pytest.raises(StorageFullError):
        store.write("models/m.npz", b"new" * 1000)
    assert _files(tmp_path) == ["models/m.npz"]
    assert store.read("models/m.npz", sha256) == b"old" * 100


def test_blob_write_other_io_error_propagates_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path)
    monkeypatch.setattr(blobs, "write_fd", _fail_halfway(errno.EIO))
    with pytest.raises(OSError) as raised:
        store.write("datasets/b.npz", b"y" * 10_000)
    assert raised.value.errno == errno.EIO and not isinstance(raised.value, StorageFullError)
    assert _files(tmp_path) == []


def test_blob_write_whole_after_the_disk_has_room_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = bytes(range(256)) * 4000  # larger than one os.write may take at once on some systems
    sha256 = store.write("datasets/c.npz", data)
    assert store.read("datasets/c.npz", sha256) == data
    assert _files(tmp_path) == ["datasets/c.npz"]
