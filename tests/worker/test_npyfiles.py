"""Blobs written piece by piece (whole or not at all) and .npz members streamed in row chunks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from worker.blobs import BlobError, LocalBlobStore
from worker.npyfiles import ArrayFormatError, iter_rows, member_header, member_writer, write_member


def test_blob_writer_streams_an_npz_numpy_loads(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    X = np.arange(50, dtype=np.float64).reshape(25, 2)
    with blobs.writer("r/out.npz") as writer, zipfile.ZipFile(writer, "w") as archive:  # type: ignore[call-overload]
        write_member(archive, "classes", np.array(["a", "b"]))
        with member_writer(archive, "X", X.dtype, X.shape) as stream:
            for start in range(0, 25, 10):
                stream.write(X[start : start + 10].tobytes())
    with np.load(tmp_path / "r/out.npz", allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["X"], X)
        assert arrays["classes"].tolist() == ["a", "b"]
    with blobs.open_verified("r/out.npz", writer.sha256) as handle, zipfile.ZipFile(handle) as archive:
        assert member_header(archive, "X") == ((25, 2), np.dtype(np.float64))
        chunks = list(iter_rows(archive, "X", 10))
    assert [len(chunk) for chunk in chunks] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate(chunks), X)
    assert writer.size == (tmp_path / "r/out.npz").stat().st_size


def test_blob_writer_leaves_nothing_when_the_block_fails(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    with pytest.raises(RuntimeError, match="midway"), blobs.writer("r/out.npz") as writer:
        writer.write(b"partial")
        raise RuntimeError("midway")
    assert list((tmp_path / "r").iterdir()) == []


def test_open_verified_refuses_a_changed_blob(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    with blobs.writer("b.bin") as writer:
        writer.write(b"hello")
    (tmp_path / "b.bin").write_bytes(b"hellO")
    with pytest.raises(BlobError, match="checksum"):
        blobs.open_verified("b.bin", writer.sha256)
    with pytest.raises(BlobError, match="missing"):
        blobs.open_verified("absent.bin", writer.sha256)


def test_iter_rows_refuses_object_arrays_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, O=np.array([{"a": 1}], dtype=object), X=np.zeros((4, 2)))
    with zipfile.ZipFile(path) as archive:
        with pytest.raises(ArrayFormatError, match="object"):
            list(iter_rows(archive, "O", 2))
        with pytest.raises(ArrayFormatError, match="no such array"):
            list(iter_rows(archive, "y", 2))
    truncated = tmp_path / "short.npz"
    with (
        zipfile.ZipFile(truncated, "w") as archive,
        member_writer(archive, "X", np.dtype(np.float64), (4, 2)) as stream,
    ):
        stream.write(np.zeros((3, 2)).tobytes())
    with zipfile.ZipFile(truncated) as archive, pytest.raises(ArrayFormatError, match="truncated"):
        list(iter_rows(archive, "X", 3))
