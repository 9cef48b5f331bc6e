"""Client bytes -> validated (X, y): CSV with a header row, NPZ with arrays X and y, or JSON lists.

Every rejection is a `DatasetError` whose message names the row and column (CSV), the array (NPZ) or
the field (JSON); the API turns it into a 422. NPZ members are read with allow_pickle=False after their
header is checked, so object arrays are refused without being unpickled and sizes are checked before
any data is read.
"""

from __future__ import annotations

import csv
import io
import lzma
import math
import re
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from numpy.typing import DTypeLike

from engine.data import MAX_LABEL_CHARS, LabelColumn, LabelError, distinct, normalize_column

NPZ_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Limits:
    """Dataset caps from settings."""

    max_rows: int
    max_features: int
    max_classes: int
    max_bytes: int = 100 * 1024 * 1024  # decompressed array data of an .npz (a compressed upload may not exceed it)


class DatasetError(ValueError):
    """A dataset the API refuses; `details` locates the problem (row, column, field, limit)."""

    def __init__(self, message: str, *, code: str = "invalid_dataset", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details: dict[str, Any] = {"message": message, **details}


@dataclass
class Dataset:
    """A parsed dataset: float features (float32 or float64), int64 or str labels, and the feature names."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] = field(default_factory=list)


def _limit(field_name: str, limit: str, value: int, maximum: int) -> DatasetError:
    return DatasetError(
        f"{field_name}: {value} exceeds the limit {limit}={maximum}",
        code="limit_exceeded",
        field=field_name,
        limit=limit,
        value=value,
        maximum=maximum,
    )


def _labels(labels: object, *, where: str) -> LabelColumn:
    """`engine.data.normalize_column`, its refusal located as `where` + 1-based row."""
    try:
        return normalize_column(labels)
    except LabelError as exc:
        row = exc.index + 1
        raise DatasetError(f"{where} {row}: {exc.reason}", field="labels", row=row) from None


def _classes(y: np.ndarray) -> np.ndarray:
    """The sorted distinct labels (small non-negative ints by counting: no sort of every label)."""
    if y.dtype.kind in "iu" and len(y) and y.min() >= 0 and y.max() < 1 << 20:
        return np.flatnonzero(np.bincount(y))
    return np.sort(distinct(y)[0])


def check_dataset(X: np.ndarray, y: np.ndarray, limits: Limits, classes: np.ndarray | None = None) -> Dataset:
    """Shared checks: shapes, finite features, at least two classes, caps.

    `classes` are y's sorted distinct values when the caller has them already (else they are computed).
    """
    n_samples, n_features = X.shape
    if n_samples == 0:
        raise DatasetError("the dataset has no rows", field="features")
    if n_features == 0:
        raise DatasetError("the dataset has no feature columns", field="features")
    if n_samples > limits.max_rows:
        raise _limit("rows", "max_rows", n_samples, limits.max_rows)
    if n_features > limits.max_features:
        raise _limit("features", "max_features", n_features, limits.max_features)
    if classes is None:
        classes = _classes(y)
    if len(classes) < 2:
        only = classes[0].item() if len(classes) else None
        raise DatasetError(
            f"labels: only one class ({only!r}); a classifier needs at least 2", field="labels", classes=1
        )
    if len(classes) > limits.max_classes:
        raise _limit("classes", "max_classes", len(classes), limits.max_classes)
    return Dataset(X=X, y=y)


def _first_non_finite(X: np.ndarray) -> tuple[int, int] | None:
    if np.isfinite(X.sum()):  # NaN and inf survive a sum; a finite sum proves every value finite, with no mask
        return None
    bad = np.argwhere(~np.isfinite(X))  # or none: large finite values can overflow the sum
    return (int(bad[0][0]), int(bad[0][1])) if len(bad) else None


# --- CSV ------------------------------------------------------------------------------------------
# The fast path hands blocks of whole lines to NumPy's C parser (np.loadtxt): feature cells become floats
# without Python objects, the label column goes through a converter that interns each distinct text as a
# small integer code. Anything the fast path refuses is located by a second, row-by-row pass with the csv
# module (`_locate_csv_error`), so messages name the row, line, column and value exactly.

_BLOCK_BYTES = 1024 * 1024  # NumPy's loader holds a block as UCS-4 text: 4 bytes per character
_HEADER_CHUNK = 64 * 1024
_NEWLINE = ord("\n")
_NAME_BYTES = 1024  # a header may use up to this many bytes per column before it is refused by size
_NUMBER = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)\s*", re.IGNORECASE)


class _FastPathError(Exception):
    """The fast path met something it does not explain; the row-by-row pass names it."""


@dataclass(frozen=True)
class _Columns:
    header: list[str]
    label_index: int
    feature_index: list[int]

    @property
    def names(self) -> list[str]:
        return [self.header[i] for i in self.feature_index]


def _stream(source: bytes | IO[bytes]) -> IO[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source)
    source.seek(0)
    return source


def _not_utf8(offset: int) -> DatasetError:
    return DatasetError(f"file: not UTF-8 text (invalid byte at offset {offset})", field="file")


def _header_line(stream: IO[bytes], limits: Limits) -> bytes:
    """The header's bytes; refused by column count (or size) while it is read, before it is split."""
    line = b""
    max_bytes = _HEADER_CHUNK + (limits.max_features + 1) * _NAME_BYTES
    while True:
        chunk = stream.readline(_HEADER_CHUNK)
        line += chunk
        if b'"' not in line and line.count(b",") > limits.max_features:
            raise _limit("features", "max_features", line.count(b","), limits.max_features)
        if len(line) > max_bytes:
            raise DatasetError(
                f"header: longer than {max_bytes} bytes (max_features={limits.max_features} columns)",
                code="limit_exceeded",
                row=0,
                limit="max_features",
            )
        if not chunk or chunk.endswith(b"\n"):
            return line


def _read_header(stream: IO[bytes], label_column: str | None, limits: Limits) -> _Columns:
    raw = _header_line(stream, limits)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc.start) from None
    if not text.strip() and not any(block.strip() for block in iter(lambda: stream.read(_BLOCK_BYTES), b"")):
        raise DatasetError("file: empty file; expected a header row and data rows", field="file")
    try:
        header = [name.strip() for name in next(csv.reader([text.rstrip("\r\n")]), [])] if text.strip() else []
    except csv.Error as exc:
        raise DatasetError(f"header (line 1): malformed CSV ({exc})", row=0, line=1) from None
    if len(header) < 2:
        raise DatasetError(f"header: {len(header)} column(s); expected feature columns and a label column", row=0)
    if len(header) - 1 > limits.max_features:
        raise _limit("features", "max_features", len(header) - 1, limits.max_features)
    if label_column is None:
        label_index = len(header) - 1
    elif label_column in header:
        label_index = header.index(label_column)
    else:
        raise DatasetError(
            f"label_column: {label_column!r} is not a column of the header ({', '.join(header[:20])})",
            field="label_column",
        )
    return _Columns(header, label_index, [i for i in range(len(header)) if i != label_index])


def _blocks(stream: IO[bytes]) -> Iterator[str]:
    """The rest of the stream as decoded text blocks of whole lines (never cut inside a quoted field)."""
    offset = stream.tell()
    pending = b""
    while True:
        chunk = stream.read(_BLOCK_BYTES)
        data = pending + chunk
        if not chunk:
            cut = len(data)
        else:
            cut = data.rfind(b"\n") + 1
            quoted = data.find(b'"', 0, cut) >= 0  # a search, much faster than counting, settles most blocks
            while quoted and cut > 0 and data.count(b'"', 0, cut) % 2:
                cut = data.rfind(b"\n", 0, cut - 1) + 1
            if cut == 0:
                pending = data
                continue
        block, pending = data[:cut], data[cut:]
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(offset + exc.start) from None
        offset += cut
        if text and not text.isspace():  # no stripped copy of the block
            yield text
        if not chunk:
            return


def _capacity(stream: IO[bytes], n_columns: int, limits: Limits) -> int:
    """Rows the data can hold at most: lines, bytes per valid row, and max_rows + 1 (to detect the excess)."""
    start = stream.tell()
    lines = 1
    size = 0
    while chunk := stream.read(_BLOCK_BYTES):
        lines += int(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8) == _NEWLINE))  # SIMD, unlike bytes.count
        size += len(chunk)
    stream.seek(start)
    return max(1, min(lines, size // (2 * n_columns - 1) + 1, limits.max_rows + 1))


def _parse_blocks(
    stream: IO[bytes], columns: _Columns, limits: Limits, dtype: DTypeLike
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, label codes and the distinct label texts (in code order) via np.loadtxt, block by block."""
    n_columns = len(columns.header)
    capacity = _capacity(stream, n_columns, limits)
    X = np.empty((capacity, len(columns.feature_index)), dtype=dtype)
    codes = np.empty(capacity, dtype=np.int64)
    table: defaultdict[str, int] = defaultdict(lambda: len(table))  # a label's code: its order of appearance
    rows = 0
    for text in _blocks(stream):
        try:
            block = np.loadtxt(
                io.StringIO(text),
                dtype=dtype,
                delimiter=",",
                comments=None,
                quotechar='"',
                ndmin=2,
                converters={columns.label_index: table.__getitem__},  # called per cell: a C method, no frame
            )
        except ValueError:
            raise _FastPathError from None
        if block.shape[1] != n_columns or rows + len(block) > capacity:
            raise _FastPathError
        if len(table) > limits.max_classes:
            _check_classes(list(table), limits)
        part = X[rows : rows + len(block)]
        np.take(block, columns.feature_index, axis=1, out=part)
        if not np.isfinite(part).all():
            raise _FastPathError
        codes[rows : rows + len(block)] = block[:, columns.label_index]
        rows += len(block)
    if rows == 0:
        raise DatasetError("file: no data rows after the header", field="file", row=1)
    X.resize((rows, X.shape[1]), refcheck=False)  # gives the unused tail back
    return X, codes[:rows], list(table)


def _check_classes(texts: list[str], limits: Limits) -> None:
    """Refuse early when the distinct labels, once normalised, are more than max_classes."""
    try:
        count = len(normalize_column(np.array(texts, dtype=str)).classes)
    except LabelError:
        raise _FastPathError from None
    if count > limits.max_classes:
        raise _limit("classes", "max_classes", count, limits.max_classes)


def parse_csv(
    source: bytes | IO[bytes], *, label_column: str | None, limits: Limits, dtype: DTypeLike = np.float64
) -> Dataset:
    """A CSV with a header row; the label column is `label_column` (default the last column).

    `source` is the file's bytes or a seekable binary file (read in blocks, never whole); features come
    back as `dtype`.
    """
    stream = _stream(source)
    columns = _read_header(stream, label_column, limits)
    body = stream.tell()
    try:
        X, codes, texts = _parse_blocks(stream, columns, limits, dtype)
        column = normalize_column(np.array(texts, dtype=str))  # the rule on each distinct text, in code order
    except (_FastPathError, LabelError):
        stream.seek(body)
        _locate_csv_error(stream, columns, limits, np.dtype(dtype))
        raise DatasetError("file: not a CSV of numeric features and a label column", field="file") from None
    dataset = check_dataset(X, np.take(column.values, codes), limits, column.classes)
    dataset.feature_names = columns.names
    return dataset


def _locate_csv_error(stream: IO[bytes], columns: _Columns, limits: Limits, dtype: np.dtype[Any]) -> None:
    """Read the data rows again one by one and raise for the first that is wrong."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    reader = csv.reader(text)
    number = 0
    try:
        for row in reader:
            if not row:  # blank line
                continue
            number += 1
            if number > limits.max_rows:
                raise _limit("rows", "max_rows", number, limits.max_rows)
            _check_row(row, number, reader.line_num + 1, columns, dtype)
    except csv.Error as exc:
        line = reader.line_num + 1
        raise DatasetError(
            f"row {number + 1} (line {line}): malformed CSV ({exc})", row=number + 1, line=line
        ) from None
    except UnicodeDecodeError:
        raise DatasetError("file: not UTF-8 text", field="file") from None
    finally:
        text.detach()


def _check_row(row: list[str], number: int, line: int, columns: _Columns, dtype: np.dtype[Any]) -> None:
    """Raise naming the first problem of one data row (`line` counts the header as line 1)."""
    width = len(columns.header)
    if len(row) != width:
        raise DatasetError(
            f"row {number} (line {line}): {len(row)} fields, expected {width} like the header "
            f"(column {min(len(row), width) + 1} is {'extra' if len(row) > width else 'missing'})",
            row=number,
            line=line,
            column=min(len(row), width) + 1,
        )
    largest = float(np.finfo(dtype).max)
    for index in columns.feature_index:
        cell = row[index]
        problem = "is not a number"
        if _NUMBER.fullmatch(cell):
            problem = "is not a finite number"
            if abs(float(cell)) <= largest:  # NaN compares False
                continue
        raise _cell_error(columns, number, line, index, f"{cell.strip()[:40]!r} {problem}")
    label = row[columns.label_index].strip()
    if not label:
        raise _cell_error(columns, number, line, columns.label_index, "empty label")
    if len(label) > MAX_LABEL_CHARS:
        raise _cell_error(columns, number, line, columns.label_index, f"label longer than {MAX_LABEL_CHARS} characters")


def _cell_error(columns: _Columns, number: int, line: int, index: int, problem: str) -> DatasetError:
    name = columns.header[index]
    return DatasetError(
        f"row {number} (line {line}), column {name!r} (#{index + 1}): {problem}",
        row=number,
        line=line,
        column=name,
        column_index=index + 1,
    )


# --- NPZ ------------------------------------------------------------------------------------------

# What reading a truncated or corrupt member raises (a bad deflate / LZMA stream raises zlib.error /
# LZMAError, bzip2 OSError).
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)
_HEADER_ERRORS = (*_READ_ERRORS, SyntaxError)
_ARCHIVE_ERRORS = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, zlib.error, lzma.LZMAError)


_MAX_NPY_HEADER = 4096  # NumPy writes headers of a few dozen bytes; a larger one is not trusted


@dataclass(frozen=True)
class _Member:
    """An array the .npz must hold: its name, the dtype kinds it may have, and caps on its size."""

    name: str
    kinds: str
    max_items: int
    max_bytes: int
    target: int  # bytes per value the engine will hold

    @property
    def path(self) -> str:
        return f"{self.name}.npy"


def _npy_header(fp: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any], bytes]:
    """Shape, order, dtype and raw bytes of a .npy header, its declared length capped before it is read."""
    prefix = fp.read(8)
    if len(prefix) < 8 or prefix[:6] != b"\x93NUMPY" or prefix[6] not in (1, 2, 3) or prefix[7] != 0:
        raise DatasetError(f"{name}: not a valid .npy array (bad magic or version)", field=name)
    size_bytes = 2 if prefix[6] == 1 else 4
    length_field = fp.read(size_bytes)
    length = int.from_bytes(length_field, "little")
    if len(length_field) < size_bytes or length > _MAX_NPY_HEADER:
        raise DatasetError(
            f"{name}: not a valid .npy array (header of {length} bytes, at most {_MAX_NPY_HEADER})", field=name
        )
    raw = prefix + length_field + fp.read(length)
    header = io.BytesIO(raw)
    header.seek(8)
    version = (prefix[6], 0)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran_order, dtype = reader(header)
    except _HEADER_ERRORS as exc:
        raise DatasetError(f"{name}: not a valid .npy array ({exc})", field=name) from None
    return shape, fortran_order, dtype, raw


def _check_member(member: _Member, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """Refuse an array by its header: object or unexpected dtype, a dimension out of range, too many bytes."""
    name, max_items = member.name, member.max_items
    if dtype.hasobject:
        raise DatasetError(f"{name}: object arrays are not accepted (they need pickle)", field=name)
    if dtype.kind not in member.kinds:
        expected = "numeric" if member.kinds == "biuf" else "numeric or text"
        raise DatasetError(f"{name}: dtype {dtype.str} is not {expected}", field=name)
    if dtype.itemsize > 4 * MAX_LABEL_CHARS:
        raise DatasetError(f"{name}: text longer than {MAX_LABEL_CHARS} characters", field=name)
    if any(not isinstance(n, int) or n < 0 or n > max_items for n in shape):
        raise DatasetError(
            f"{name}: shape {shape} has a dimension outside [0, {max_items}] (max_rows x max_features)",
            code="limit_exceeded",
            field=name,
        )
    items = math.prod(shape)  # Python ints: a forged header cannot overflow into a small number
    if items > max_items:
        raise DatasetError(
            f"{name}: {items} values exceed the limits (max_rows x max_features)", code="limit_exceeded", field=name
        )
    held = items * max(dtype.itemsize, member.target)  # what the engine will hold, or the raw data if larger
    if held > member.max_bytes:
        raise DatasetError(
            f"{name}: {held} bytes once decompressed and converted exceed max_upload_bytes ({member.max_bytes})",
            code="limit_exceeded",
            field=name,
            limit="max_upload_bytes",
        )


def _member_array(fp: IO[bytes], member: _Member) -> tuple[np.ndarray, bytes]:
    """An uninitialised array shaped as the member's header says (checked first), and the header's bytes."""
    try:
        shape, fortran_order, dtype, header = _npy_header(fp, member.name)
    except _READ_ERRORS as exc:
        raise DatasetError(f"{member.name}: not a valid .npy array ({exc})", field=member.name) from None
    _check_member(member, shape, dtype)
    if fortran_order:
        return np.empty(shape[::-1], dtype=dtype).T, header
    return np.empty(shape, dtype=dtype), header


def _data_of(array: np.ndarray) -> memoryview:
    """The bytes of a C- or Fortran-ordered array, in memory order."""
    return array.reshape(-1, order="A").view(np.uint8).data


def _read_member(
    archive: zipfile.ZipFile, stream: IO[bytes], member: _Member, checks: list[Future[None]]
) -> np.ndarray:
    """One .npy member: header checked (no object dtype, shape and size capped) before the data is read;
    a stored member's CRC-32 check is appended to `checks` (zipfile checks the others as it reads)."""
    if member.path not in archive.namelist():
        raise DatasetError(f"file: the .npz has no array {member.name!r} (it needs X and y)", field=member.name)
    info = archive.getinfo(member.path)
    start = _stored_start(stream, info)
    if start is not None:
        array = _read_stored(stream, start, info, member, checks)
        if array is not None:
            return array
    with archive.open(member.path) as fp:
        array, _ = _member_array(fp, member)
        try:
            _read_into(fp, _data_of(array), _NPY_PIECE)
        except _READ_ERRORS as exc:
            raise DatasetError(f"{member.name}: truncated or corrupt array ({exc})", field=member.name) from None
    return array


_LOCAL_HEADER = 30  # a zip local file header: NPZ_MAGIC, ..., name and extra-field lengths at offsets 26, 28


def _stored_start(stream: IO[bytes], info: zipfile.ZipInfo) -> int | None:
    """Where the bytes of a stored (uncompressed, unencrypted) member begin; None: read it through zipfile."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    name = info.filename.encode()
    stream.seek(info.header_offset)
    local = stream.read(_LOCAL_HEADER + len(name))
    if local[:4] != NPZ_MAGIC or local[_LOCAL_HEADER:] != name or int.from_bytes(local[26:28], "little") != len(name):
        return None
    return info.header_offset + _LOCAL_HEADER + len(name) + int.from_bytes(local[28:30], "little")


def _read_stored(
    stream: IO[bytes], start: int, info: zipfile.ZipInfo, member: _Member, checks: list[Future[None]]
) -> np.ndarray | None:
    """A stored member read straight into its array (one copy, from the upload), its CRC-32 check started in
    the background; None when the header is refused or does not match the member's size (zipfile's path
    then reads it and explains)."""
    stream.seek(start)
    try:
        array, header = _member_array(stream, member)
    except DatasetError:
        return None
    data = _data_of(array)
    if len(header) + len(data) != info.file_size:
        return None
    try:
        _read_into(stream, data, len(data))
    except _READ_ERRORS as exc:
        raise DatasetError(f"{member.name}: truncated or corrupt array ({exc})", field=member.name) from None
    checks.append(_CHECKSUMS.submit(_check_crc, header, data, info.CRC, member))
    return array


# zlib.crc32 releases the GIL: a checksum runs on another core while the arrays are checked and labelled.
_CHECKSUMS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="npz-crc")


def _check_crc(header: bytes, data: memoryview, expected: int, member: _Member) -> None:
    if zlib.crc32(data, zlib.crc32(header)) != expected:
        raise DatasetError(
            f"{member.name}: truncated or corrupt array (Bad CRC-32 for file {member.path!r})", field=member.name
        )


_NPY_PIECE = 256 * 1024  # as NumPy reads: pieces that stay in cache while inflated, checksummed, copied


def _read_into(fp: IO[bytes], view: memoryview, piece: int) -> None:
    """Fill `view` from `fp` in pieces of at most `piece` bytes (no second copy of the whole array)."""
    position = 0
    while position < len(view):
        count = fp.readinto(view[position : position + piece])  # type: ignore[attr-defined]
        if not count:
            raise EOFError("the array data is shorter than its header says")
        position += count


def parse_npz(source: bytes | IO[bytes], *, limits: Limits, dtype: DTypeLike = np.float64) -> Dataset:
    """An .npz holding `X` (n_samples, n_features) numeric and `y` (n_samples,) int or text labels.

    `source` is the file's bytes or a seekable binary file; features come back as `dtype` (one conversion,
    none when X already has it), and the size limit counts the bytes of X as `dtype`. The CRC-32 of stored
    members is checked in a background thread while the arrays are validated; a mismatch is the error
    reported, whatever else was found.
    """
    checks: list[Future[None]] = []
    try:
        X, y = _read_arrays(_stream(source), limits, np.dtype(dtype), checks)
        return _npz_dataset(X, y, limits, np.dtype(dtype))
    finally:
        for check in checks:
            check.result()


def _read_arrays(
    stream: IO[bytes], limits: Limits, target: np.dtype[Any], checks: list[Future[None]]
) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"file: not a valid .npz archive ({exc})", field="file") from None
    max_items = limits.max_rows * (limits.max_features + 1)
    X_member = _Member("X", "biuf", max_items, limits.max_bytes, target.itemsize)
    try:
        with archive:
            X = _read_member(archive, stream, X_member, checks)
            y = _read_member(archive, stream, _Member("y", "biufUS", limits.max_rows, limits.max_bytes, 0), checks)
    except _ARCHIVE_ERRORS as exc:
        raise DatasetError(f"file: corrupt .npz archive ({exc})", field="file") from None
    return X, y


def _npz_dataset(X: np.ndarray, y: np.ndarray, limits: Limits, target: np.dtype[Any]) -> Dataset:
    if X.ndim != 2:
        raise DatasetError(f"X: expected 2 dimensions (n_samples, n_features), got shape {X.shape}", field="X")
    if y.ndim != 1:
        raise DatasetError(f"y: expected 1 dimension (n_samples,), got shape {y.shape}", field="y")
    if len(y) != len(X):
        raise DatasetError(f"y: {len(y)} labels for {len(X)} rows of X", field="y")
    if X.shape[1] > limits.max_features:
        raise _limit("features", "max_features", X.shape[1], limits.max_features)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        X = X.astype(target, order="C", copy=False)
    bad = _first_non_finite(X)
    if bad is not None:
        raise DatasetError(
            f"X: row {bad[0] + 1}, column {bad[1] + 1} is not a finite number",
            field="X",
            row=bad[0] + 1,
            column=bad[1] + 1,
        )
    labels, classes = _npz_labels(y)
    return check_dataset(X, labels, limits, classes)


def _npz_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels as int64 or normalised text, and their classes when the label rule computed them."""
    if y.dtype.kind in "biu":
        if y.dtype.kind == "u" and len(y) and int(y.max()) > np.iinfo(np.int64).max:
            raise DatasetError("y: labels exceed the int64 range", field="y")
        return y.astype(np.int64, copy=False), None
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            row = int(np.argmin(finite))
            raise DatasetError(f"y: row {row + 1} is not a finite number", field="y", row=row + 1)
        if len(y) and (not np.all(y == np.round(y)) or np.abs(y).max() > 2**53):
            raise DatasetError("y: float labels must be whole numbers", field="y")
        return y.astype(np.int64), None
    try:
        column = _labels(y, where="y row")
    except UnicodeDecodeError:
        raise DatasetError("y: byte-string labels are not UTF-8", field="y") from None
    return column.values, column.classes


# --- JSON -----------------------------------------------------------------------------------------


_JSON_ROWS = 4096


def from_lists(
    features: Sequence[Sequence[float]], labels: Sequence[int | str], *, limits: Limits, dtype: DTypeLike = np.float64
) -> Dataset:
    """A JSON body's already type-checked lists: rectangular features, one label per row."""
    if len(features) > limits.max_rows:
        raise _limit("features", "max_rows", len(features), limits.max_rows)
    if not features:
        raise DatasetError("features: no rows", field="features")
    width = len(features[0])
    if width > limits.max_features:
        raise _limit("features[0]", "max_features", width, limits.max_features)
    for index, row in enumerate(features):
        if len(row) != width:
            raise DatasetError(
                f"features[{index}]: {len(row)} values, expected {width} like features[0]",
                field=f"features[{index}]",
                row=index + 1,
            )
    if len(labels) != len(features):
        raise DatasetError(f"labels: {len(labels)} labels for {len(features)} rows of features", field="labels")
    X = np.empty((len(features), width), dtype=dtype)
    with np.errstate(over="ignore"):  # beyond the dtype's range becomes inf, refused below
        for start in range(0, len(features), _JSON_ROWS):  # in pieces: other threads get the GIL between them
            X[start : start + _JSON_ROWS] = features[start : start + _JSON_ROWS]
    bad = _first_non_finite(X)
    if bad is not None:  # e.g. 1e400 overflowing to inf
        raise DatasetError(f"features[{bad[0]}][{bad[1]}]: not a finite number", field=f"features[{bad[0]}][{bad[1]}]")
    column = _labels(labels, where="labels row")
    return check_dataset(X, column.values, limits, column.classes)
