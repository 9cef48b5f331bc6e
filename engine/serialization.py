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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.activations import ACTIVATIONS
from engine.config import TrainConfig
from engine.data import Label
from engine.losses import OUTPUTS
from engine.model import Model
from engine.optimizers import OPTIMIZERS

Array = NDArray[Any]

MODEL_FORMAT = "backprop-model"
MODEL_FORMAT_VERSION = 1
STATE_FORMAT = "backprop-training-state"
STATE_FORMAT_VERSION = 1
_META_KEY = "meta"


class ModelFormatError(ValueError):
    """Bytes that are not a valid model or training state: corrupt, truncated, unknown version, bad shapes."""


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: NaN and infinities (which JSON cannot hold) become None, NumPy scalars
    and arrays become Python numbers and lists, tuples become lists -- recursively through dicts and lists.

    The one place where a non-finite number turns into null, for model files, checkpoints and everything
    the worker stores and the API shows.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def pack(arrays: dict[str, Array], meta: dict[str, Any]) -> bytes:
    """``arrays`` plus ``meta`` (JSON, stored as a uint8 array under ``"meta"``) as ``.npz`` bytes.

    Non-finite floats in ``meta`` are stored as null.
    """
    payload = dict(arrays)
    text = json.dumps(json_safe(meta), allow_nan=False)
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


def _require(meta: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str = "model") -> Any:
    if key not in meta:
        raise ModelFormatError(f"{what} metadata is missing {key!r}")
    value = meta[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ModelFormatError(f"{what} metadata {key!r} has the wrong type: {type(value).__name__}")
    return value


def _check_format(meta: dict[str, Any], name: str, version: int, what: str) -> None:
    if meta.get("format") != name:
        raise ModelFormatError(f"not a {what}: format {meta.get('format')!r}")
    if meta.get("format_version") != version:
        noun = what.removeprefix("backprop ")
        raise ModelFormatError(
            f"unsupported {noun} format_version {meta.get('format_version')!r}; this engine reads version {version}"
        )


def _check_classes(classes: list[Any], what: str) -> None:
    if len(classes) < 2 or not (
        all(isinstance(c, str) for c in classes) or all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    ):
        raise ModelFormatError(f"{what} classes must be >= 2 labels, all ints or all strings")
    if len(set(classes)) != len(classes):
        raise ModelFormatError(f"{what} classes contain duplicates")


def _check_keys(arrays: dict[str, Array], expected: set[str], what: str, source: str) -> None:
    if set(arrays) != expected:
        missing = sorted(expected - set(arrays))
        extra = sorted(set(arrays) - expected)
        raise ModelFormatError(f"{what} arrays do not match its {source}: missing {missing}, unexpected {extra}")


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
    _check_format(meta, MODEL_FORMAT, MODEL_FORMAT_VERSION, "backprop model")
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
    _check_classes(classes, "model")
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
    _check_keys(arrays, expected_keys, "model", "layer_sizes")
    params = _model_params(arrays, sizes, dtype_name)
    mean, scale = _standardisation(arrays, sizes[0], "model")
    return Model(params, activation, output, classes, mean, scale, config, history, metrics)


def _model_params(arrays: dict[str, Array], sizes: list[int], dtype_name: str) -> list[tuple[Array, Array]]:
    params = []
    for i in range(len(sizes) - 1):
        W, b = arrays[f"W{i}"], arrays[f"b{i}"]
        if W.shape != (sizes[i], sizes[i + 1]) or b.shape != (sizes[i + 1],):
            raise ModelFormatError(f"layer {i}: W{i} {W.shape} / b{i} {b.shape} do not chain with layer_sizes {sizes}")
        if W.dtype.name != dtype_name or b.dtype.name != dtype_name:
            raise ModelFormatError(f"layer {i}: expected {dtype_name}, got {W.dtype} and {b.dtype}")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ModelFormatError(f"layer {i}: weights contain NaN or infinity")
        params.append((np.ascontiguousarray(W), np.ascontiguousarray(b)))
    return params


def _standardisation(arrays: dict[str, Array], n_features: int, what: str) -> tuple[Array, Array]:
    mean, scale = arrays["mean"], arrays["scale"]
    for key, arr in (("mean", mean), ("scale", scale)):
        if arr.shape != (n_features,) or arr.dtype != np.float64:
            expected = f"float64 of shape ({n_features},)"
            raise ModelFormatError(f"{what} {key} must be {expected}, got {arr.dtype} {arr.shape}")
        if not np.isfinite(arr).all():
            raise ModelFormatError(f"{what} {key} contains NaN or infinity")
    if not (scale > 0).all():
        raise ModelFormatError(f"{what} scale must be positive")
    return mean, scale


_STATE_META = (
    "format",
    "format_version",
    "config",
    "epoch",
    "step",
    "rng",
    "best_loss",
    "best_epoch",
    "wait",
    "finished",
    "stop_reason",
    "history",
    "classes",
    "output",
    "n_samples",
    "n_features",
)


@dataclass
class TrainingState:
    """Everything needed to continue a training run, beside the model format: a checkpoint.

    The split (``train_idx``, ``val_idx``) and standardisation (``mean``, ``scale``) of the data the run
    was started on, the ``rng`` in its current state, the flat parameters ``theta`` (``None`` for a run
    whose weights are not drawn yet), the optimizer's slots, the best-so-far weights and loss, the epoch,
    step and patience counters and the history (``EpochMetrics.to_dict()`` per epoch).
    :meth:`pack` writes ``.npz`` bytes; :meth:`unpack` reads them back strictly.
    """

    config: TrainConfig
    classes: list[Label]
    output: str
    n_samples: int
    n_features: int
    train_idx: NDArray[np.intp]
    val_idx: NDArray[np.intp]
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    rng: np.random.Generator
    theta: Array | None = None
    opt_state: dict[str, Array] = field(default_factory=dict)
    best_theta: Array | None = None
    epoch: int = 0
    step: int = 0
    wait: int = 0
    best_epoch: int = 0
    best_loss: float | None = None
    finished: bool = False
    stop_reason: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def pack(self) -> bytes:
        """``.npz`` bytes (no pickle): the arrays, plus JSON metadata for the rest."""
        if self.theta is None:
            raise ValueError("a training state without parameters cannot be packed")
        arrays: dict[str, Array] = {
            "theta": self.theta,
            "train_idx": self.train_idx.astype(np.int64),
            "val_idx": self.val_idx.astype(np.int64),
            "mean": self.mean,
            "scale": self.scale,
        }
        for slot, value in self.opt_state.items():
            arrays[f"opt_{slot}"] = value
        if self.best_theta is not None:
            arrays["best_theta"] = self.best_theta
        meta = {
            "format": STATE_FORMAT,
            "format_version": STATE_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "history": self.history,
            "classes": self.classes,
            "output": self.output,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
        }
        return pack(arrays, meta)

    @classmethod
    def unpack(cls, data: object) -> TrainingState:
        """Read :meth:`pack`'s bytes: format version, metadata keys and types, array names, dtypes and shapes.

        Raises
        ------
        ModelFormatError
            Anything that is not exactly a training state this engine writes.
        TypeError
            ``data`` is not bytes.
        """
        arrays, meta = unpack(data, "training state")
        _check_format(meta, STATE_FORMAT, STATE_FORMAT_VERSION, "training state")
        if set(meta) != set(_STATE_META):
            raise ModelFormatError(f"training state metadata keys are {sorted(meta)}, expected {sorted(_STATE_META)}")
        state = _state_from_meta(meta)
        slots = OPTIMIZERS[state.config.optimizer].slots
        expected = {"theta", "train_idx", "val_idx", "mean", "scale", *(f"opt_{slot}" for slot in slots)}
        _check_keys(arrays, expected | ({"best_theta"} & set(arrays)), "training state", "optimizer")
        state.train_idx, state.val_idx = _split(arrays, state.n_samples)
        state.mean, state.scale = _standardisation(arrays, state.n_features, "training state")
        n_parameters = state.config.network_shape(state.n_features, len(state.classes)).n_parameters
        dtype = np.dtype(state.config.dtype)
        for key in ("theta", *(f"opt_{slot}" for slot in slots), "best_theta"):
            value = arrays.get(key)
            if value is not None and (value.shape != (n_parameters,) or value.dtype != dtype):
                raise ModelFormatError(
                    f"training state {key} must be {dtype} of shape ({n_parameters},), got {value.dtype} {value.shape}"
                )
        state.theta = arrays["theta"]
        state.opt_state = {slot: arrays[f"opt_{slot}"] for slot in slots}
        state.best_theta = arrays.get("best_theta")
        return state


def _state_from_meta(meta: dict[str, Any]) -> TrainingState:
    """The state's scalar part (arrays still empty), every value type-checked."""
    what = "training state"
    try:
        config = TrainConfig.from_dict(_require(meta, "config", dict, what))
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = _require(meta, "rng", dict, what)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFormatError(f"training state metadata is invalid: {exc}") from None
    classes = _require(meta, "classes", list, what)
    _check_classes(classes, what)
    n_samples, n_features = _require(meta, "n_samples", int, what), _require(meta, "n_features", int, what)
    try:
        shape = config.network_shape(n_features, len(classes))
    except ValueError as exc:
        raise ModelFormatError(f"training state metadata is invalid: {exc}") from None
    if meta["output"] != shape.output or n_samples < 2 or n_features < 1:
        raise ModelFormatError("training state output, n_samples or n_features do not fit its config")
    best_loss = meta["best_loss"]
    if best_loss is not None and (isinstance(best_loss, bool) or not isinstance(best_loss, int | float)):
        raise ModelFormatError(f"training state metadata 'best_loss' has the wrong type: {type(best_loss).__name__}")
    stop_reason = meta["stop_reason"]
    if stop_reason is not None and not isinstance(stop_reason, str):
        raise ModelFormatError("training state metadata 'stop_reason' has the wrong type")
    history = _require(meta, "history", list, what)
    if not all(isinstance(entry, dict) for entry in history):
        raise ModelFormatError("training state history must be a list of objects")
    empty = np.empty(0, dtype=np.intp)
    return TrainingState(
        config=config,
        classes=classes,
        output=shape.output,
        n_samples=n_samples,
        n_features=n_features,
        train_idx=empty,
        val_idx=empty,
        mean=np.empty(0),
        scale=np.empty(0),
        rng=rng,
        epoch=_require(meta, "epoch", int, what),
        step=_require(meta, "step", int, what),
        wait=_require(meta, "wait", int, what),
        best_epoch=_require(meta, "best_epoch", int, what),
        best_loss=None if best_loss is None else float(best_loss),
        finished=_require(meta, "finished", bool, what),
        stop_reason=stop_reason,
        history=history,
    )


def _split(arrays: dict[str, Array], n_samples: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The train and validation row indices: 1-D ints in range, together as many as the samples."""
    parts = []
    for key in ("train_idx", "val_idx"):
        idx = arrays[key]
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or (len(idx) and (idx.min() < 0 or idx.max() >= n_samples)):
            raise ModelFormatError(f"training state {key} must be 1-D row indices below {n_samples}")
        parts.append(idx.astype(np.intp))
    train_idx, val_idx = parts
    if len(train_idx) == 0 or len(train_idx) + len(val_idx) != n_samples:
        raise ModelFormatError("training state split does not cover the samples")
    return train_idx, val_idx
