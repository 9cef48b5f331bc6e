"""Models (and training states) to bytes and back: ``.npz`` arrays plus a JSON metadata entry.

Loading is strict and never unpickles: ``allow_pickle=False``, a known format version, exactly the
expected keys, dtypes and shapes that chain layer to layer. Anything else is a :class:`ModelFormatError`
with a message saying what is wrong -- never an exception from deep inside NumPy or zipfile.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.activations import ACTIVATIONS
from engine.losses import OUTPUTS
from engine.model import Model

Array = NDArray[Any]

MODEL_FORMAT = "backprop-model"
MODEL_FORMAT_VERSION = 1
_META_KEY = "meta"


class ModelFormatError(ValueError):
    """Bytes that are not a valid model or training state: corrupt, truncated, unknown version, bad shapes."""


def _jsonable(value: Any) -> Any:
    """``value`` with NaN / infinity (which JSON cannot hold) replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def pack(arrays: dict[str, Array], meta: dict[str, Any]) -> bytes:
    """``arrays`` plus ``meta`` (JSON, stored as a uint8 array under ``"meta"``) as ``.npz`` bytes.

    Non-finite floats in ``meta`` are stored as null.
    """
    payload = dict(arrays)
    text = json.dumps(_jsonable(meta), allow_nan=False)
    payload[_META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **payload)
    return buffer.getvalue()


def unpack(data: object, what: str = "model") -> tuple[dict[str, Array], dict[str, Any]]:
    """Inverse of :func:`pack`: the arrays (without ``"meta"``) and the decoded metadata dict."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} data must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw.startswith(b"PK"):
        raise ModelFormatError(f"{what} data is not an .npz archive ({len(raw)} bytes)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ModelFormatError(f"{what} data is not an .npz archive")
            arrays = {key: archive[key] for key in archive.files}
    except ModelFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, ValueError) as exc:
        raise ModelFormatError(f"{what} data is corrupt or truncated: {exc}") from None
    except Exception as exc:  # a damaged archive can fail in many ways inside zipfile/zlib/numpy
        raise ModelFormatError(f"{what} data is corrupt or truncated: {type(exc).__name__}: {exc}") from None
    meta_raw = arrays.pop(_META_KEY, None)
    if meta_raw is None:
        raise ModelFormatError(f"{what} data has no {_META_KEY!r} entry")
    if meta_raw.dtype != np.uint8 or meta_raw.ndim != 1:
        raise ModelFormatError(f"{what} metadata must be a 1-D uint8 array, got {meta_raw.dtype} {meta_raw.shape}")
    try:
        meta = json.loads(meta_raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{what} metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{what} metadata must be a JSON object, got {type(meta).__name__}")
    return arrays, meta


def dumps(model: Model) -> bytes:
    """Serialise ``model`` to bytes (``.npz`` with ``W{l}``, ``b{l}``, ``mean``, ``scale`` and ``meta``)."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an engine.Model, got {type(model).__name__}")
    arrays: dict[str, Array] = {"mean": model.mean, "scale": model.scale}
    for i, (W, b) in enumerate(model.params):
        arrays[f"W{i}"] = W
        arrays[f"b{i}"] = b
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "layer_sizes": model.layer_sizes,
        "activation": model.activation,
        "output": model.output,
        "classes": model.classes,
        "dtype": model.dtype.name,
        "config": model.config,
        "history": model.history,
        "metrics": model.metrics,
    }
    return pack(arrays, meta)


def _require(meta: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in meta:
        raise ModelFormatError(f"model metadata is missing {key!r}")
    value = meta[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ModelFormatError(f"model metadata {key!r} has the wrong type: {type(value).__name__}")
    return value


def loads(data: bytes) -> Model:
    """Load a model serialised by :func:`dumps`.

    Raises
    ------
    ModelFormatError
        Not an ``.npz``, truncated or corrupt, unknown format or version, missing or extra keys, wrong
        dtypes, non-finite values, or shapes that do not chain.
    TypeError
        ``data`` is not bytes.
    """
    arrays, meta = unpack(data, "model")
    if meta.get("format") != MODEL_FORMAT:
        raise ModelFormatError(f"not a backprop model: format {meta.get('format')!r}")
    version = meta.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"unsupported model format_version {version!r}; this engine reads version {MODEL_FORMAT_VERSION}"
        )
    sizes = _require(meta, "layer_sizes", list)
    if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ModelFormatError(f"model layer_sizes must be >= 2 positive ints, got {sizes!r}")
    activation = _require(meta, "activation", str)
    if activation not in ACTIVATIONS:
        raise ModelFormatError(f"model has unknown activation {activation!r}")
    output = _require(meta, "output", str)
    if output not in OUTPUTS:
        raise ModelFormatError(f"model has unknown output {output!r}")
    classes = _require(meta, "classes", list)
    if len(classes) < 2 or not (
        all(isinstance(c, str) for c in classes) or all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    ):
        raise ModelFormatError("model classes must be >= 2 labels, all ints or all strings")
    if len(set(classes)) != len(classes):
        raise ModelFormatError("model classes contain duplicates")
    expected_out = 1 if output == "sigmoid" else len(classes)
    if output == "sigmoid" and len(classes) != 2:
        raise ModelFormatError(f"a sigmoid model needs exactly 2 classes, got {len(classes)}")
    if sizes[-1] != expected_out:
        raise ModelFormatError(f"model output width {sizes[-1]} does not fit {len(classes)} classes with {output}")
    dtype_name = _require(meta, "dtype", str)
    if dtype_name not in ("float32", "float64"):
        raise ModelFormatError(f"model dtype must be float32 or float64, got {dtype_name!r}")
    config = _require(meta, "config", dict)
    history = _require(meta, "history", list)
    metrics = _require(meta, "metrics", dict)

    n_layers = len(sizes) - 1
    expected_keys = {"mean", "scale"} | {f"W{i}" for i in range(n_layers)} | {f"b{i}" for i in range(n_layers)}
    if set(arrays) != expected_keys:
        missing = sorted(expected_keys - set(arrays))
        extra = sorted(set(arrays) - expected_keys)
        raise ModelFormatError(f"model arrays do not match its layer_sizes: missing {missing}, unexpected {extra}")
    params = []
    for i in range(n_layers):
        W, b = arrays[f"W{i}"], arrays[f"b{i}"]
        if W.shape != (sizes[i], sizes[i + 1]) or b.shape != (sizes[i + 1],):
            raise ModelFormatError(f"layer {i}: W{i} {W.shape} / b{i} {b.shape} do not chain with layer_sizes {sizes}")
        if W.dtype.name != dtype_name or b.dtype.name != dtype_name:
            raise ModelFormatError(f"layer {i}: expected {dtype_name}, got {W.dtype} and {b.dtype}")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ModelFormatError(f"layer {i}: weights contain NaN or infinity")
        params.append((np.ascontiguousarray(W), np.ascontiguousarray(b)))
    mean, scale = arrays["mean"], arrays["scale"]
    for key, arr in (("mean", mean), ("scale", scale)):
        if arr.shape != (sizes[0],) or arr.dtype != np.float64:
            raise ModelFormatError(f"model {key} must be float64 of shape ({sizes[0]},), got {arr.dtype} {arr.shape}")
        if not np.isfinite(arr).all():
            raise ModelFormatError(f"model {key} contains NaN or infinity")
    if not (scale > 0).all():
        raise ModelFormatError("model scale must be positive")
    return Model(params, activation, output, classes, mean, scale, config, history, metrics)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN/inf: keep finite floats, map the rest to None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
