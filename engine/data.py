"""User data at the engine's edge: checking features and labels, label encoding, the stratified split and
the standardisation statistics.

Everything here works without copying ``X`` whole (large inputs are scanned in row chunks), so training adds
little memory above the data itself.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
Label = int | str

_CHUNK_ELEMENTS = 1 << 20
MAX_LABEL_CHARS = 256
_INTEGER = re.compile(r"[+-]?\d{1,18}")


class LabelError(ValueError):
    """A label that cannot be a class: empty or too long. ``index`` is its 0-based position in the input."""

    def __init__(self, reason: str, index: int) -> None:
        super().__init__(f"{reason} (label at index {index})")
        self.reason = reason
        self.index = index


def row_chunks(n_rows: int, n_cols: int) -> range:
    """Start offsets of row chunks of about a million elements."""
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    return range(0, n_rows, step)


def check_features(X: object, name: str = "X", n_features: int | None = None) -> Array:
    """Return ``X`` as a 2-D float array (no copy when it already is one), or raise naming ``name``.

    Checks: numeric, 2-D, at least one row and one column, ``n_features`` columns if given, no NaN/inf.
    """
    if isinstance(X, np.ndarray):
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be a 2-D array of numbers: {exc}") from None
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, but the model expects {n_features}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    n_cols = arr.shape[1]
    for start in row_chunks(arr.shape[0], n_cols):
        block = arr[start : start + max(1, _CHUNK_ELEMENTS // n_cols)]
        finite = np.isfinite(block)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise ValueError(
                f"{name} contains NaN or infinity (first at row {start + int(row)}, column {int(col)}: "
                f"{block[row, col]})"
            )
    return arr


def check_labels(y: object, n_samples: int, name: str = "y") -> Array:
    """Return ``y`` as a 1-D array of ints or strings of length ``n_samples``, or raise naming ``name``.

    Floats that are whole numbers (``1.0``) are accepted as ints; a column vector (n, 1) is flattened; text
    labels go through :func:`normalize_labels` (stripped; integer-like text becomes ints).
    """
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be a 1-D array of class labels: {exc}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {arr.shape}")
    if len(arr) != n_samples:
        raise ValueError(f"len({name}) = {len(arr)} but X has {n_samples} rows")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if not (arr == np.round(arr)).all():
            raise TypeError(f"{name} holds non-integer floats; class labels must be ints or strings")
        return arr.astype(np.int64)
    if arr.dtype.kind in "UT":  # "T": NumPy 2's variable-width StringDType
        return normalize_labels(arr)
    if arr.dtype == object:
        if all(isinstance(v, str) for v in arr):
            return normalize_labels(np.array(arr.tolist(), dtype=str))
        if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in arr):
            return arr.astype(np.int64)
    raise TypeError(f"{name} must hold class labels that are all ints or all strings, got dtype {arr.dtype}")


_SAMPLE = 4096  # evenly spaced elements whose distinct hashes are tried first
_VERIFY_ROWS = 1 << 16  # rows compared at a time: a small temporary that stays in cache
_HASH_PRIME = 0x100000001B3  # FNV's 64-bit prime: odd, so texts that differ in one word only never collide


def distinct(values: Array) -> tuple[Array, NDArray[np.intp]]:
    """The distinct values of a 1-D array (in no particular order) and each element's index into them.

    Fixed-width text (str or bytes) is grouped by a 64-bit hash of its bytes read as 8-byte words: the
    distinct hashes of a sample, looked up for every element (no sort of all of them), or when the sample
    missed a value a sort of all hashes, still several times faster than ``np.unique``'s sort of strings.
    Every element is then compared with its group's first; a hash collision falls back to ``np.unique``.
    """
    words = _words(values)
    if words is None:
        return _unique(values)
    powers = [pow(_HASH_PRIME, power, 1 << 64) for power in range(words.shape[1] - 1, -1, -1)]
    hashes = words @ np.array(powers, dtype=np.uint64)  # sum of word * prime**k, wrapping modulo 2**64: one pass
    step = max(1, len(hashes) // _SAMPLE)
    found, first = np.unique(hashes[::step], return_index=True)
    first *= step
    inverse = np.searchsorted(found, hashes)
    if not _all_like_first(words, first, inverse):  # a value the sample missed (or a collision)
        found, inverse = np.unique(hashes, return_inverse=True)
        first = np.empty(len(found), dtype=np.intp)
        first[inverse] = np.arange(len(values))  # one element of each group (any will do: all are checked)
        if not _all_like_first(words, first, inverse):
            return _unique(values)
    return values[first], inverse.astype(np.intp, copy=False)


def _unique(values: Array) -> tuple[Array, NDArray[np.intp]]:
    uniques, inverse = np.unique(values, return_inverse=True)
    return uniques, inverse.astype(np.intp, copy=False)


def _all_like_first(words: Array, first: NDArray[np.intp], inverse: NDArray[np.intp]) -> bool:
    """Whether every row of `words` equals row `first[inverse[row]]` (an index past the end never does)."""
    representatives = words[first]
    for start in range(0, len(words), _VERIFY_ROWS):
        rows = slice(start, start + _VERIFY_ROWS)
        if not np.array_equal(np.take(representatives, inverse[rows], axis=0, mode="clip"), words[rows]):
            return False
    return True


def _words(values: Array) -> Array | None:
    """Fixed-width text as a (n, words) unsigned integer matrix of its bytes; None for anything else."""
    size = values.dtype.itemsize
    if values.dtype.kind not in "US" or values.ndim != 1 or size == 0 or len(values) == 0:
        return None
    word = next(width for width in (8, 4, 2, 1) if size % width == 0)
    return np.ascontiguousarray(values).view(np.dtype(f"u{word}")).reshape(len(values), size // word)


class LabelColumn(NamedTuple):
    """A column of labels under the label rule."""

    values: Array  # the normalised labels: int64 or str (the input array itself when the rule changes nothing)
    classes: Array  # their sorted distinct values
    codes: NDArray[np.intp]  # each label's index into classes


def normalize_column(labels: object) -> LabelColumn:
    """The label rule applied to a column: the normalised labels, their sorted classes and codes.

    Text is stripped; when every distinct text is integer-like (``"1"``, ``"01"``, ``"+1"``: the same class
    1) the labels are int64, else str. The rule runs on the distinct texts only, so a long column with few
    classes costs a hash and a lookup per label. Raises :class:`LabelError` (with the 0-based position of
    the first offending label) for an empty label or one longer than ``MAX_LABEL_CHARS`` characters, and
    ``UnicodeDecodeError`` for bytes that are not UTF-8.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind in "biu":
        values = arr.reshape(-1).astype(np.int64)
        classes, codes = np.unique(values, return_inverse=True)
        return LabelColumn(values, classes, codes.astype(np.intp, copy=False))
    if arr.dtype.kind not in "US":
        arr = np.array([str(label) for label in arr.reshape(-1).tolist()], dtype=str)
    if arr.size == 0:
        return LabelColumn(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.intp))
    arr = arr.reshape(-1)
    uniques, inverse = distinct(arr)
    if uniques.dtype.kind == "S":
        uniques = np.strings.decode(uniques, "utf-8")  # UnicodeDecodeError (a ValueError) for other bytes
    texts = np.strings.strip(uniques)
    lengths = np.strings.str_len(texts)
    too_long = f"label longer than {MAX_LABEL_CHARS} characters"
    for bad, reason in ((lengths == 0, "empty label"), (lengths > MAX_LABEL_CHARS, too_long)):
        if bad.any():
            raise LabelError(reason, int(np.flatnonzero(np.isin(inverse, np.flatnonzero(bad)))[0]))
    if all(_INTEGER.fullmatch(text) for text in texts.tolist()):
        texts = np.array([int(text) for text in texts.tolist()], dtype=np.int64)
    classes, merged = np.unique(texts, return_inverse=True)  # "1" and "01" are one class
    codes = np.take(merged.astype(np.intp, copy=False), inverse)
    if arr.dtype.kind == "U" and len(classes) == len(uniques) and texts.dtype == arr.dtype and (texts == uniques).all():
        return LabelColumn(arr, classes, codes)  # nothing to strip or merge: no copy of the column
    return LabelColumn(np.take(classes, codes), classes, codes)


def normalize_labels(labels: object) -> Array:
    """Class labels as int64 when every label is an integer or integer-like text, else as a str array.

    The rule of :func:`normalize_column` (stripped text; ``"1"``, ``"01"`` and ``"+1"`` are the same class 1);
    integer arrays are only widened to int64. Raises :class:`LabelError` for an empty label or one longer
    than ``MAX_LABEL_CHARS`` characters.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64)
    return normalize_column(arr).values


def encode_labels(y: Array, name: str = "y") -> tuple[list[Label], NDArray[np.intp]]:
    """Sorted distinct labels (as JSON-able Python values) and each sample's index into them."""
    found, where = distinct(np.asarray(y).reshape(-1))
    order = np.argsort(found)  # the few distinct values sorted, instead of sorting every label
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    classes, indices = found[order], rank[where]
    if len(classes) < 2:
        raise ValueError(f"{name} needs at least 2 classes, got {len(classes)}: {classes.tolist()}")
    labels = [c.item() if isinstance(c, np.generic) else c for c in classes]
    return labels, indices.astype(np.intp, copy=False)


def label_kind(classes: list[Label]) -> str:
    """``"str"`` or ``"int"``."""
    return "str" if isinstance(classes[0], str) else "int"


def stratified_split(
    y_idx: NDArray[np.intp], fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Train and validation row indices with each class split in proportion ``fraction``.

    Each class gives ``round(fraction * count)`` rows to validation but always keeps one for training;
    both index arrays come back sorted. With ``fraction == 0`` validation is empty.
    """
    n = len(y_idx)
    if fraction <= 0:
        return np.arange(n, dtype=np.intp), np.empty(0, dtype=np.intp)
    validation: list[NDArray[np.intp]] = []
    for c in range(int(y_idx.max()) + 1):
        members = np.flatnonzero(y_idx == c)
        take = min(int(np.floor(fraction * len(members) + 0.5)), len(members) - 1)
        if take > 0:
            validation.append(rng.permutation(members)[:take])
    val = np.sort(np.concatenate(validation)) if validation else np.empty(0, dtype=np.intp)
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).astype(np.intp), val.astype(np.intp)


def standardisation(X: Array, rows: NDArray[np.intp]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-feature mean and scale of ``X[rows]``, computed in float64 chunk by chunk (two passes).

    A feature that is constant on these rows gets scale 1, so it maps to 0 instead of dividing by 0.
    """
    n_features = X.shape[1]
    total = np.zeros(n_features)
    chunks = row_chunks(len(rows), n_features)
    step = chunks.step
    for start in chunks:
        total += np.take(X, rows[start : start + step], axis=0).sum(axis=0, dtype=np.float64)
    mean = total / len(rows)
    squares = np.zeros(n_features)
    for start in chunks:
        block = np.take(X, rows[start : start + step], axis=0).astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", block, block)
    scale = np.sqrt(squares / len(rows))
    scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
    return mean, scale
