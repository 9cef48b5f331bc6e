"""Model bytes: round trip, and strict loading of corrupt, truncated or inconsistent blobs."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest

from engine import Model, ModelFormatError, TrainConfig, Training, TrainingState, dumps, json_safe, loads, train
from engine.serialization import pack, unpack


@pytest.fixture(scope="module")
def model() -> Model:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 4)) * 10 + 3
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 90)]
    return train(X, y, TrainConfig(hidden_layers=(6, 5), epochs=3)).model


@pytest.fixture(scope="module")
def blob(model: Model) -> bytes:
    return dumps(model)


def _rewrite(blob: bytes, change: Any) -> bytes:
    """Unpack, let ``change(arrays, meta)`` edit them, pack again."""
    arrays, meta = unpack(blob)
    change(arrays, meta)
    return pack(arrays, meta)


def test_dumps_loads_round_trip_gives_identical_predictions(model: Model, blob: bytes) -> None:
    loaded = loads(blob)
    X = np.random.default_rng(1).standard_normal((25, 4)) * 10 + 3
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.classes == model.classes == ["a", "b", "c"]
    assert loaded.layer_sizes == [4, 6, 5, 3]
    assert loaded.config == model.config and loaded.history == model.history and loaded.metrics == model.metrics
    assert loaded.dtype == np.float32
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        names = set(archive.namelist())
    assert names == {
        "meta.npy",
        "mean.npy",
        "scale.npy",
        "W0.npy",
        "b0.npy",
        "W1.npy",
        "b1.npy",
        "W2.npy",
        "b2.npy",
    }


def test_loads_sigmoid_model_with_int_labels() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int) * 7
    model = train(X, y, TrainConfig(hidden_layers=(4,), epochs=2, dtype="float64")).model
    loaded = loads(dumps(model))
    assert loaded.output == "sigmoid" and loaded.classes == [0, 7]
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.predict(X).dtype.kind == "i"


@pytest.mark.parametrize("cut", [0, 10, 100, 0.5, -1, -30])
def test_loads_truncated_blob_raises_format_error(blob: bytes, cut: float) -> None:
    n = int(len(blob) * cut) if isinstance(cut, float) else cut
    with pytest.raises(ModelFormatError, match="model data"):
        loads(blob[:n])


def test_loads_corrupted_bytes_raise_only_format_error(blob: bytes) -> None:
    """Random byte damage gives ModelFormatError (or, if only weight payload bytes were hit and the CRC
    still matched, a model) -- never an exception from inside zipfile or NumPy."""
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(200):
        damaged = bytearray(blob)
        for position in rng.integers(0, len(blob), 8):
            damaged[position] = int(rng.integers(0, 256))
        try:
            assert isinstance(loads(bytes(damaged)), Model)
        except ModelFormatError:
            rejected += 1
    assert rejected >= 150


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not an .npz"),
        (b"hello world", "not an .npz"),
        (b"PK\x03\x04garbage", "corrupt or truncated"),
    ],
)
def test_loads_non_model_bytes(data: bytes, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        loads(data)


def test_loads_rejects_npy_and_pickles() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))
    with pytest.raises(ModelFormatError):
        loads(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array([{"format": "backprop-model"}], dtype=object))  # needs pickle to read
    with pytest.raises(ModelFormatError, match="corrupt"):
        loads(buffer.getvalue())


def test_loads_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        loads("not bytes")  # type: ignore[arg-type]


def _set(key: str, value: Any) -> Any:
    def change(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        meta[key] = value

    return change


def _drop_meta(key: str) -> Any:
    def change(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        del meta[key]

    return change


def _array(key: str, value: Any) -> Any:
    def change(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value(arrays[key])

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_set("format_version", 99), "unsupported model format_version 99"),
        (_set("format", "something-else"), "not a backprop model"),
        (_drop_meta("classes"), "missing 'classes'"),
        (_set("activation", "swish"), "unknown activation 'swish'"),
        (_set("output", "linear"), "unknown output"),
        (_set("classes", ["a", "b"]), "output width 3 does not fit 2 classes"),
        (_set("classes", ["a", 1, "c"]), "all ints or all strings"),
        (_set("layer_sizes", [4, 6, 5, 3, 3]), "do not match its layer_sizes"),
        (_set("layer_sizes", [4, 7, 5, 3]), "do not chain"),
        (_array("W1", None), r"missing \['W1'\]"),
        (_array("W1", lambda W: W[:, :-1]), "do not chain"),
        (_array("b0", lambda b: b.astype(np.float64)), "expected float32"),
        (_array("W0", lambda W: np.full_like(W, np.nan)), "NaN"),
        (_array("scale", lambda s: -s), "scale must be positive"),
        (_array("mean", lambda m: m[:2]), "mean must be float64 of shape"),
    ],
)
def test_loads_rejects_inconsistent_models(blob: bytes, change: Any, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        loads(_rewrite(blob, change))


def test_loads_rejects_bad_metadata_encoding(blob: bytes) -> None:
    arrays, _ = unpack(blob)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, meta=np.frombuffer(b"\xff\xfe{", dtype=np.uint8), **arrays)
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        loads(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, meta=np.frombuffer(json.dumps([1, 2]).encode(), dtype=np.uint8), **arrays)
    with pytest.raises(ModelFormatError, match="JSON object"):
        loads(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    with pytest.raises(ModelFormatError, match="no 'meta' entry"):
        loads(buffer.getvalue())


def test_predict_checks_features(model: Model) -> None:
    with pytest.raises(ValueError, match="X has 3 features, but the model expects 4"):
        model.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict_proba([[0.0, 1.0, np.nan, 2.0]])
    with pytest.raises(ValueError, match="X must be 2-D"):
        model.predict(np.zeros(4))


def test_json_safe_turns_non_finite_numbers_into_null_recursively() -> None:
    value = {"a": float("nan"), "b": [1.5, float("inf"), (np.float32(2.0), np.int64(3))], "c": np.array([1.0])}
    safe = json_safe(value)
    assert safe == {"a": None, "b": [1.5, None, [2.0, 3]], "c": [1.0]}
    assert type(safe["b"][2][1]) is int
    json.dumps(safe, allow_nan=False)


@pytest.fixture(scope="module")
def training_state() -> bytes:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 3))
    y = np.array([0, 1, 2, 1] * 10)
    run = Training(X, y, TrainConfig(hidden_layers=(5,), epochs=4, validation_fraction=0.25, early_stopping=True))
    run.run_epoch()
    return run.state_bytes()


def test_training_state_pack_unpack_round_trip(training_state: bytes) -> None:
    state = TrainingState.unpack(training_state)
    assert state.epoch == 1 and state.classes == [0, 1, 2] and state.output == "softmax"
    assert state.theta is not None and state.theta.shape == (3 * 5 + 5 + 5 * 3 + 3,)
    assert set(state.opt_state) == {"m", "v"} and state.best_theta is not None
    assert len(state.train_idx) + len(state.val_idx) == 40 and len(state.history) == 1
    again = TrainingState.unpack(state.pack())
    np.testing.assert_array_equal(again.theta, state.theta)  # type: ignore[arg-type]
    assert again.rng.bit_generator.state == state.rng.bit_generator.state


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a, m: m.update(format_version=2), "unsupported training state format_version 2"),
        (lambda a, m: m.pop("wait"), "metadata keys"),
        (lambda a, m: m.update(extra=1), "metadata keys"),
        (lambda a, m: m.update(epoch="1"), "'epoch' has the wrong type"),
        (lambda a, m: m.update(output="sigmoid"), "output"),
        (lambda a, m: m.update(rng={"bit_generator": "MT19937"}), "metadata is invalid"),
        (lambda a, m: m["config"].update(optimizer="sgd"), "unexpected"),
        (lambda a, m: a.pop("opt_m"), "missing"),
        (lambda a, m: a.update(bogus=np.zeros(1)), "unexpected"),
        (lambda a, m: a.update(theta=a["theta"][:-1]), "theta must be float32 of shape"),
        (lambda a, m: a.update(theta=a["theta"].astype(np.float64)), "theta must be float32"),
        (lambda a, m: a.update(train_idx=a["train_idx"][:-1]), "split does not cover"),
        (lambda a, m: a.update(val_idx=a["val_idx"] + 100), "val_idx must be 1-D row indices below 40"),
        (lambda a, m: a.update(mean=np.zeros(2)), "mean must be float64 of shape"),
    ],
)
def test_training_state_unpack_is_strict(training_state: bytes, change: Any, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        TrainingState.unpack(_rewrite(training_state, change))
