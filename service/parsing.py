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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NPZ_MAGIC = b"PK\x03\x04"
_INTEGER = re.compile(r"[+-]?\d{1,18}")
_MAX_LABEL_CHARS = 256


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
    """A parsed dataset: float64 features, int or str labels, and where it came from."""

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


def normalize_labels(labels: Sequence[str | int], *, where: str) -> np.ndarray:
    """Labels as an int64 array when every label looks like an integer, else as a str array."""
    texts: list[str] = []
    for index, label in enumerate(labels):
        text = label.strip() if isinstance(label, str) else str(label)
        if not text:
            raise DatasetError(f"{where} {index + 1}: empty label", field="labels", row=index + 1)
        if len(text) > _MAX_LABEL_CHARS:
            raise DatasetError(
                f"{where} {index + 1}: label longer than {_MAX_LABEL_CHARS} characters",
                field="labels",
                row=index + 1,
            )
        texts.append(text)
    if texts and all(_INTEGER.fullmatch(text) for text in texts):
        return np.array([int(text) for text in texts], dtype=np.int64)
    return np.array(texts, dtype=str)


def check_dataset(X: np.ndarray, y: np.ndarray, limits: Limits) -> Dataset:
    """Shared checks: shapes, finite features, at least two classes, caps."""
    n_samples, n_features = X.shape
    if n_samples == 0:
        raise DatasetError("the dataset has no rows", field="features")
    if n_features == 0:
        raise DatasetError("the dataset has no feature columns", field="features")
    if n_samples > limits.max_rows:
        raise _limit("rows", "max_rows", n_samples, limits.max_rows)
    if n_features > limits.max_features:
        raise _limit("features", "max_features", n_features, limits.max_features)
    classes = np.unique(y)
    if len(classes) < 2:
        only = classes[0].item() if len(classes) else None
        raise DatasetError(
            f"labels: only one class ({only!r}); a classifier needs at least 2", field="labels", classes=1
        )
    if len(classes) > limits.max_classes:
        raise _limit("classes", "max_classes", len(classes), limits.max_classes)
    return Dataset(X=X, y=y)


def _first_non_finite(X: np.ndarray) -> tuple[int, int] | None:
    bad = np.argwhere(~np.isfinite(X))
    if len(bad) == 0:
        return None
    return int(bad[0][0]), int(bad[0][1])


# --- CSV ------------------------------------------------------------------------------------------


def parse_csv(data: bytes, *, label_column: str | None, limits: Limits) -> Dataset:
    """A CSV with a header row; the label column is `label_column` (default the last column)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"file: not UTF-8 text (invalid byte at offset {exc.start})", field="file"
        ) from None
    if not text.strip():
        raise DatasetError("file: empty file; expected a header row and data rows", field="file")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        header = [name.strip() for name in next(reader, [])]
        for row in reader:
            if not row:  # blank line
                continue
            if len(row) != len(header):
                number = len(rows) + 1
                raise DatasetError(
                    f"row {number} (line {reader.line_num}): {len(row)} fields, expected {len(header)} "
                    f"like the header (column {min(len(row), len(header)) + 1} is "
                    f"{'extra' if len(row) > len(header) else 'missing'})",
                    row=number,
                    line=reader.line_num,
                    column=min(len(row), len(header)) + 1,
                )
            rows.append(row)
            lines.append(reader.line_num)
            if len(rows) > limits.max_rows:
                raise _limit("rows", "max_rows", len(rows), limits.max_rows)
    except csv.Error as exc:
        number = len(rows) + 1
        raise DatasetError(
            f"row {number} (line {reader.line_num}): malformed CSV ({exc})", row=number, line=reader.line_num
        ) from None
    if len(header) < 2:
        raise DatasetError(
            f"header: {len(header)} column(s); expected feature columns and a label column", row=0
        )
    if len(header) - 1 > limits.max_features:
        raise _limit("features", "max_features", len(header) - 1, limits.max_features)
    if not rows:
        raise DatasetError("file: no data rows after the header", field="file", row=1)

    if label_column is None:
        label_index = len(header) - 1
    elif label_column in header:
        label_index = header.index(label_column)
    else:
        raise DatasetError(
            f"label_column: {label_column!r} is not a column of the header ({', '.join(header[:20])})",
            field="label_column",
        )
    feature_index = [i for i in range(len(header)) if i != label_index]
    names = [header[i] for i in feature_index]
    cells = [[row[i] for i in feature_index] for row in rows]
    try:
        X = np.array(cells, dtype=np.float64)
    except (ValueError, OverflowError):
        X = _locate_bad_cell(cells, names, feature_index, lines)
    bad = _first_non_finite(X)
    if bad is not None:
        r, c = bad
        raise DatasetError(
            f"row {r + 1} (line {lines[r]}), column {names[c]!r} (#{feature_index[c] + 1}): "
            f"{cells[r][c].strip()[:40]!r} is not a finite number",
            row=r + 1,
            line=lines[r],
            column=names[c],
            column_index=feature_index[c] + 1,
        )
    labels = [row[label_index] for row in rows]
    for r, label in enumerate(labels):
        if not label.strip():
            raise DatasetError(
                f"row {r + 1} (line {lines[r]}), column {header[label_index]!r} "
                f"(#{label_index + 1}): empty label",
                row=r + 1,
                line=lines[r],
                column=header[label_index],
                column_index=label_index + 1,
            )
    y = normalize_labels(labels, where="row")
    dataset = check_dataset(X, y, limits)
    dataset.feature_names = names
    return dataset


def _locate_bad_cell(
    cells: list[list[str]], names: list[str], feature_index: list[int], lines: list[int]
) -> np.ndarray:
    """Find the first cell that is not a number and raise naming it (fallback of the fast path)."""
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            try:
                float(cell)
            except (ValueError, OverflowError):
                raise DatasetError(
                    f"row {r + 1} (line {lines[r]}), column {names[c]!r} (#{feature_index[c] + 1}): "
                    f"{cell.strip()[:40]!r} is not a number",
                    row=r + 1,
                    line=lines[r],
                    column=names[c],
                    column_index=feature_index[c] + 1,
                ) from None
    raise DatasetError("file: features are not numeric", field="file")


# --- NPZ ------------------------------------------------------------------------------------------

# What reading a truncated or corrupt member raises (a bad deflate / LZMA stream raises zlib.error /
# LZMAError, bzip2 OSError).
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)
_HEADER_ERRORS = (*_READ_ERRORS, SyntaxError)
_ARCHIVE_ERRORS = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, zlib.error, lzma.LZMAError)


def _read_member(archive: zipfile.ZipFile, name: str, max_items: int, max_bytes: int, kinds: str) -> np.ndarray:
    """One .npy member: header checked (no object dtype, size capped) before the data is read."""
    member = f"{name}.npy"
    if member not in archive.namelist():
        raise DatasetError(f"file: the .npz has no array {name!r} (it needs X and y)", field=name)
    with archive.open(member) as fp:
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except _HEADER_ERRORS as exc:
            raise DatasetError(f"{name}: not a valid .npy array ({exc})", field=name) from None
        if dtype.hasobject:
            raise DatasetError(f"{name}: object arrays are not accepted (they need pickle)", field=name)
        if dtype.kind not in kinds:
            expected = "numeric" if kinds == "biuf" else "numeric or text"
            raise DatasetError(f"{name}: dtype {dtype.str} is not {expected}", field=name)
        if dtype.itemsize > 4 * _MAX_LABEL_CHARS:
            raise DatasetError(f"{name}: text longer than {_MAX_LABEL_CHARS} characters", field=name)
        items = math.prod(shape)  # Python ints: a forged header cannot overflow into a small number
        if items > max_items:
            raise DatasetError(
                f"{name}: {items} values exceed the limits (max_rows x max_features)",
                code="limit_exceeded",
                field=name,
            )
        if items * dtype.itemsize > max_bytes:
            raise DatasetError(
                f"{name}: {items * dtype.itemsize} bytes once decompressed exceed max_upload_bytes ({max_bytes})",
                code="limit_exceeded",
                field=name,
                limit="max_upload_bytes",
            )
        try:
            fp.seek(0)  # read_array parses the (already checked) header again
            array = np.lib.format.read_array(fp, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise DatasetError(f"{name}: truncated or corrupt array ({exc})", field=name) from None
    return np.asarray(array)


def parse_npz(data: bytes, *, limits: Limits) -> Dataset:
    """An .npz holding `X` (n_samples, n_features) numeric and `y` (n_samples,) int or text labels."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"file: not a valid .npz archive ({exc})", field="file") from None
    max_items = limits.max_rows * (limits.max_features + 1)
    try:
        with archive:
            X = _read_member(archive, "X", max_items, limits.max_bytes, "biuf")
            y = _read_member(archive, "y", limits.max_rows, limits.max_bytes, "biufUS")
    except _ARCHIVE_ERRORS as exc:
        raise DatasetError(f"file: corrupt .npz archive ({exc})", field="file") from None
    if X.ndim != 2:
        raise DatasetError(
            f"X: expected 2 dimensions (n_samples, n_features), got shape {X.shape}", field="X"
        )
    if X.dtype.kind not in "biuf":
        raise DatasetError(f"X: dtype {X.dtype.str} is not numeric", field="X")
    if y.ndim != 1:
        raise DatasetError(f"y: expected 1 dimension (n_samples,), got shape {y.shape}", field="y")
    if len(y) != len(X):
        raise DatasetError(f"y: {len(y)} labels for {len(X)} rows of X", field="y")
    if X.shape[1] > limits.max_features:
        raise _limit("features", "max_features", X.shape[1], limits.max_features)
    X = X.astype(np.float64)
    bad = _first_non_finite(X)
    if bad is not None:
        raise DatasetError(
            f"X: row {bad[0] + 1}, column {bad[1] + 1} is not a finite number",
            field="X",
            row=bad[0] + 1,
            column=bad[1] + 1,
        )
    return check_dataset(X, _npz_labels(y), limits)


def _npz_labels(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind in "biu":
        if y.dtype.kind == "u" and len(y) and int(y.max()) > np.iinfo(np.int64).max:
            raise DatasetError("y: labels exceed the int64 range", field="y")
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            row = int(np.argmin(finite))
            raise DatasetError(f"y: row {row + 1} is not a finite number", field="y", row=row + 1)
        if len(y) and (not np.all(y == np.round(y)) or np.abs(y).max() > 2**53):
            raise DatasetError("y: float labels must be whole numbers", field="y")
        return y.astype(np.int64)
    if y.dtype.kind == "S":
        try:
            texts = [value.decode("utf-8") for value in y.tolist()]
        except UnicodeDecodeError:
            raise DatasetError("y: byte-string labels are not UTF-8", field="y") from None
        return normalize_labels(texts, where="y row")
    return normalize_labels([str(value) for value in y.tolist()], where="y row")


# --- JSON -----------------------------------------------------------------------------------------


def from_lists(
    features: Sequence[Sequence[float]], labels: Sequence[int | str], *, limits: Limits
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
        raise DatasetError(
            f"labels: {len(labels)} labels for {len(features)} rows of features", field="labels"
        )
    X = np.array(features, dtype=np.float64).reshape(len(features), width)
    bad = _first_non_finite(X)
    if bad is not None:  # e.g. 1e400 overflowing to inf
        raise DatasetError(
            f"features[{bad[0]}][{bad[1]}]: not a finite number", field=f"features[{bad[0]}][{bad[1]}]"
        )
    return check_dataset(X, normalize_labels(labels, where="labels row"), limits)
