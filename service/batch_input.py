"""Features of a file uploaded for a batch prediction: a CSV with a header row or an .npz with an array X.

Unlike a training dataset, a label column (CSV: `label_column`, or the column after the model's features)
or a `y` array is optional and ignored, and one class (or none) is fine. Rejections are the dataset
parser's `DatasetError`s (the API answers 422), naming the row, column or array.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass

import numpy as np

from service.parsing import NPZ_MAGIC, DatasetError, Limits
from worker.npyfiles import ArrayFormatError, iter_rows, member_header


@dataclass(frozen=True)
class Features:
    """Parsed rows (float64) and the feature columns' names (CSV header; None for .npz)."""

    X: np.ndarray
    names: list[str] | None


def parse_features(
    data: bytes, *, filename: str | None, label_column: str | None, n_features: int, limits: Limits
) -> Features:
    """The uploaded rows, checked against the model's `n_features` (422 `wrong_feature_count` otherwise)."""
    if data[:4] == NPZ_MAGIC or (filename or "").lower().endswith(".npz"):
        X, names = _npz_features(data, limits), None
    else:
        X, names = _csv_features(data, label_column, n_features, limits)
    if X.shape[0] == 0:
        raise DatasetError("file: no data rows", field="file")
    if X.shape[0] > limits.max_rows:
        raise DatasetError(
            f"rows: {X.shape[0]} exceeds the limit max_rows={limits.max_rows}",
            code="limit_exceeded",
            field="rows",
            limit="max_rows",
            maximum=limits.max_rows,
        )
    if X.shape[1] != n_features:
        raise DatasetError(
            f"file: {X.shape[1]} feature columns, the model expects {n_features}",
            code="wrong_feature_count",
            field="file",
            features=int(X.shape[1]),
            expected=n_features,
        )
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        row, column = int(bad[0][0]) + 1, int(bad[0][1]) + 1
        where = f"column {names[column - 1]!r}" if names else f"column {column}"
        raise DatasetError(f"row {row}, {where}: not a finite number", field="file", row=row, column=column)
    return Features(X, names)


def _npz_features(data: bytes, limits: Limits) -> np.ndarray:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            shape, dtype = member_header(archive, "X")
            if len(shape) != 2:
                raise DatasetError(f"X: expected 2 dimensions (n_rows, n_features), got shape {shape}", field="X")
            if dtype.kind not in "biuf":
                raise DatasetError(f"X: dtype {dtype.str} is not numeric", field="X")
            if shape[0] * shape[1] * 8 > limits.max_bytes or shape[0] > limits.max_rows:
                raise DatasetError(f"X: shape {shape} exceeds the upload limits", code="limit_exceeded", field="X")
            chunks = list(iter_rows(archive, "X", max(shape[0], 1)))
    except ArrayFormatError as exc:
        raise DatasetError(f"file: {exc}", field="file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"file: not a valid .npz archive ({exc})", field="file") from None
    X = chunks[0] if chunks else np.empty((0, shape[1]))
    return X.astype(np.float64)


def _csv_features(
    data: bytes, label_column: str | None, n_features: int, limits: Limits
) -> tuple[np.ndarray, list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"file: not UTF-8 text (invalid byte at offset {exc.start})", field="file") from None
    header = [name.strip() for name in next(csv.reader(io.StringIO(text[: text.find("\n") + 1 or None])), [])]
    if not header:
        raise DatasetError("file: empty file; expected a header row and data rows", field="file")
    skip: int | None
    if label_column is not None:
        if label_column not in header:
            raise DatasetError(
                f"label_column: {label_column!r} is not a column of the header ({', '.join(header[:20])})",
                field="label_column",
            )
        skip = header.index(label_column)
    else:
        skip = n_features if len(header) == n_features + 1 else None  # the label column after the features
    columns = [index for index in range(len(header)) if index != skip]
    if len(columns) > limits.max_features:
        raise DatasetError(
            f"features: {len(columns)} exceeds the limit max_features={limits.max_features}",
            code="limit_exceeded",
            field="features",
        )
    try:
        X = np.loadtxt(
            io.StringIO(text),
            delimiter=",",
            skiprows=1,
            usecols=columns,
            ndmin=2,
            dtype=np.float64,
            max_rows=limits.max_rows + 1,
        )
    except ValueError as exc:  # NumPy names the row and column: "could not convert string 'a' ... at row 3, column 2"
        raise DatasetError(f"file: {exc}", field="file") from None
    return X.reshape(-1, len(columns)), [header[index] for index in columns]
