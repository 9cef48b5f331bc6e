""".npy members of a .npz archive, written and read in row chunks so no array is ever whole in memory.

Members are stored uncompressed (ZIP_STORED, zip64), so `numpy.load` reads the archives written here, and
the archives `numpy.savez` writes are read here. Headers are checked before any data is read: object
dtypes (pickles) and Fortran order are refused.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np


class ArrayFormatError(ValueError):
    """A member that is missing, not an .npy array, or not what the reader can stream."""


@contextmanager
def member_writer(
    archive: zipfile.ZipFile, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]
) -> Iterator[IO[bytes]]:
    """Open `name`.npy in `archive` for writing with an .npy header for `dtype`/`shape`; the caller writes
    the C-order bytes of the rows (`array.tobytes()`), in as many pieces as it likes."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as stream:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(stream, header)  # type: ignore[no-untyped-call]
        yield stream


def write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """Write a small array whole as `name`.npy."""
    array = np.ascontiguousarray(array)
    with member_writer(archive, name, array.dtype, array.shape) as stream:
        stream.write(array.tobytes())


def _header(stream: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    try:
        version = np.lib.format.read_magic(stream)  # type: ignore[no-untyped-call]
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)  # type: ignore[no-untyped-call]
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ArrayFormatError(f"{name}: not an .npy array ({exc})") from None
    if dtype.hasobject:
        raise ArrayFormatError(f"{name}: object arrays are not accepted")
    if fortran and len(shape) > 1:
        raise ArrayFormatError(f"{name}: Fortran-ordered arrays are not accepted")
    return tuple(int(n) for n in shape), dtype


def member_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of `name`.npy (only its header is read)."""
    with _open(archive, name) as stream:
        return _header(stream, name)


def _open(archive: zipfile.ZipFile, name: str) -> IO[bytes]:
    try:
        return archive.open(f"{name}.npy")
    except KeyError:
        raise ArrayFormatError(f"{name}: no such array in the archive") from None


def iter_rows(archive: zipfile.ZipFile, name: str, chunk_rows: int) -> Iterator[np.ndarray]:
    """The rows of `name`.npy, `chunk_rows` at a time (the last chunk may be shorter)."""
    with _open(archive, name) as stream:
        shape, dtype = _header(stream, name)
        if not shape:
            raise ArrayFormatError(f"{name}: expected rows, got a scalar")
        row_shape = shape[1:]
        row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        left = shape[0]
        while left > 0:
            rows = min(chunk_rows, left)
            data = stream.read(rows * row_bytes)
            if len(data) != rows * row_bytes:
                raise ArrayFormatError(
                    f"{name}: truncated array ({shape[0] - left + len(data) // max(row_bytes, 1)} of {shape[0]} rows)"
                )
            yield np.frombuffer(data, dtype=dtype).reshape((rows, *row_shape))
            left -= rows


def copy_member(source: zipfile.ZipFile, target: zipfile.ZipFile, name: str, piece: int) -> Iterator[None]:
    """Copy `name`.npy byte for byte from `source` to `target`, `piece` bytes at a time; yields after each
    piece (so a streaming response can send what was written)."""
    with _open(source, name) as reader, target.open(f"{name}.npy", "w", force_zip64=True) as writer:
        while data := reader.read(piece):
            writer.write(data)
            yield None
