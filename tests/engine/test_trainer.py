"""Training: learning, reproducibility, resume, early stopping, callbacks, divergence, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import (
    EpochMetrics,
    ModelFormatError,
    TrainConfig,
    Training,
    TrainingDivergedError,
    train,
)


def _blobs(n: int = 120, k: int = 3, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    return centers[y] + rng.standard_normal((n, d)), y


def _weights(run: Training) -> list[np.ndarray]:
    return [a for W, b in run.result().model.params for a in (W, b)]


def test_train_learns_xor() -> None:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 10, dtype=float)
    y = np.array([0, 1, 1, 0] * 10)
    config = TrainConfig(
        hidden_layers=(8,),
        activation="tanh",
        epochs=150,
        batch_size=4,
        learning_rate=0.02,
        validation_fraction=0.0,
        l2=0.0,
    )
    model = train(X, y, config).model
    assert model.output == "sigmoid"
    np.testing.assert_array_equal(model.predict([[0, 0], [0, 1], [1, 0], [1, 1]]), [0, 1, 1, 0])


def test_train_overfits_50_random_points() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 10))
    y = rng.integers(0, 3, 50)
    config = TrainConfig(
        hidden_layers=(64,), epochs=300, batch_size=10, learning_rate=0.01, validation_fraction=0.0, l2=0.0
    )
    result = train(X, y, config)
    assert result.model.score(X, y) == 1.0
    assert result.history[-1].train_accuracy == 1.0


def test_train_same_seed_gives_identical_weights() -> None:
    X, y = _blobs()
    config = TrainConfig(hidden_layers=(16, 8), epochs=4, seed=3)
    first = train(X, y, config).model.params
    second = train(X, y, config).model.params
    for (W1, b1), (W2, b2) in zip(first, second, strict=True):
        assert np.array_equal(W1, W2) and np.array_equal(b1, b2)
    other = train(X, y, TrainConfig(hidden_layers=(16, 8), epochs=4, seed=4)).model.params
    assert not np.array_equal(first[0][0], other[0][0])


RESUME_CONFIGS = [
    {"optimizer": "sgd", "learning_rate": 0.05, "lr_schedule": "step", "lr_step_size": 2},
    {"optimizer": "momentum", "learning_rate": 0.02, "clip_norm": 1.0},
    {"optimizer": "nesterov", "learning_rate": 0.02, "lr_schedule": "cosine"},
    {"optimizer": "adam", "weight_decay": 0.01, "early_stopping": True, "patience": 50},
    {"optimizer": "adam", "dtype": "float64", "output": "softmax", "activation": "tanh"},
]


@pytest.mark.parametrize("overrides", RESUME_CONFIGS)
def test_training_resume_is_bit_identical(overrides: dict[str, Any]) -> None:
    X, y = _blobs(k=2 if overrides.get("output") == "softmax" else 3)
    config = TrainConfig.from_dict(
        {"hidden_layers": [12, 6], "epochs": 6, "batch_size": 16, "validation_fraction": 0.2, **overrides}
    )
    straight = Training(X, y, config)
    while not straight.finished:
        straight.run_epoch()

    interrupted = Training(X, y, config)
    for _ in range(3):
        interrupted.run_epoch()
    state = interrupted.state_bytes()
    del interrupted
    resumed = Training.resume(X, y, state)
    assert resumed.epoch == 3 and not resumed.finished
    while not resumed.finished:
        resumed.run_epoch()

    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        assert a.dtype == np.dtype(config.dtype)
        assert np.array_equal(a, b)
    losses = [m.train_loss for m in straight.history]
    assert [m.train_loss for m in resumed.history] == losses
    assert resumed.result().best_epoch == straight.result().best_epoch


def test_training_resume_rejects_other_data_and_bad_state() -> None:
    X, y = _blobs()
    run = Training(X, y, TrainConfig(hidden_layers=(4,), epochs=2))
    run.run_epoch()
    state = run.state_bytes()
    with pytest.raises(ValueError, match="X has shape"):
        Training.resume(X[:-1], y[:-1], state)
    with pytest.raises(ValueError, match="classes"):
        Training.resume(X, y + 1, state)
    with pytest.raises(ModelFormatError):
        Training.resume(X, y, state[: len(state) // 2])
    with pytest.raises(ModelFormatError, match="not a training state"):
        from engine import dumps

        Training.resume(X, y, dumps(run.result().model))


def test_train_callback_receives_metrics_and_can_stop() -> None:
    X, y = _blobs()
    seen: list[EpochMetrics] = []

    def on_epoch(metrics: EpochMetrics) -> bool:
        seen.append(metrics)
        return metrics.epoch == 3

    result = train(X, y, TrainConfig(hidden_layers=(8,), epochs=10, validation_fraction=0.25), on_epoch)
    assert result.stop_reason == "callback"
    assert [m.epoch for m in seen] == [1, 2, 3]
    assert len(result.history) == 3 and result.model.history == [m.to_dict() for m in seen]
    m = seen[-1]
    assert m.epochs == 10 and m.learning_rate == pytest.approx(1e-3)
    assert 0 <= m.train_accuracy <= 1 and m.validation_accuracy is not None
    assert m.validation_loss is not None and m.validation_loss > 0
    assert m.seconds > 0 and m.samples_per_second > 0
    assert set(m.to_dict()) == {
        "epoch",
        "epochs",
        "train_loss",
        "train_accuracy",
        "validation_loss",
        "validation_accuracy",
        "learning_rate",
        "seconds",
        "samples_per_second",
    }


def test_train_reports_completed_and_no_validation_without_split() -> None:
    X, y = _blobs()
    result = train(X, y, TrainConfig(hidden_layers=(8,), epochs=2, validation_fraction=0.0))
    assert result.stop_reason == "completed"
    assert result.history[-1].validation_loss is None and result.history[-1].validation_accuracy is None
    assert result.model.metrics["epochs_run"] == 2


def test_train_early_stopping_restores_best_weights() -> None:
    # Labels are noise: validation loss stops improving quickly while training keeps fitting.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10))
    y = rng.integers(0, 2, 200)
    config = TrainConfig(
        hidden_layers=(64,),
        epochs=200,
        learning_rate=0.01,
        validation_fraction=0.3,
        early_stopping=True,
        patience=5,
        l2=0.0,
    )
    run = Training(X, y, config)
    snapshots = {}
    while not run.finished:
        metrics = run.run_epoch()
        snapshots[metrics.epoch] = run._ws.theta.copy()
    result = run.result()
    assert result.stop_reason == "early_stopping"
    assert len(result.history) == result.best_epoch + 5 < 200
    best = min(result.history, key=lambda m: m.validation_loss or 0.0)
    assert best.epoch == result.best_epoch
    flat = np.concatenate([W.ravel() for W, _ in result.model.params] + [b for _, b in result.model.params])
    assert np.array_equal(flat, snapshots[result.best_epoch])
    assert result.model.metrics["validation_loss"] == pytest.approx(best.validation_loss)


def test_train_validation_split_is_stratified() -> None:
    y = np.array([0] * 80 + [1] * 20)
    X = np.arange(200, dtype=float).reshape(100, 2)
    run = Training(X, y, TrainConfig(hidden_layers=(2,), epochs=1, validation_fraction=0.25))
    assert np.bincount(y[run._val_idx]).tolist() == [20, 5]
    assert len(np.intersect1d(run._val_idx, run._train_idx)) == 0


def test_train_diverging_learning_rate_names_the_epoch() -> None:
    X, y = _blobs()
    X = X * 1e3
    config = TrainConfig(
        hidden_layers=(32, 32), epochs=20, optimizer="sgd", learning_rate=1e4, standardize=False, l2=0.0
    )
    with pytest.raises(TrainingDivergedError, match=r"training diverged at epoch \d+: loss is") as info:
        train(X, y, config)
    assert 1 <= info.value.epoch <= 20
    assert isinstance(info.value, ArithmeticError)


@pytest.mark.parametrize("output", ["auto", "softmax"])
def test_train_string_labels_round_trip(output: str) -> None:
    X, y_int = _blobs(k=2)
    labels = np.array(["spam", "ham"])[y_int]
    model = train(X, labels, TrainConfig(hidden_layers=(8,), epochs=30, learning_rate=0.01, output=output)).model
    assert model.classes == ["ham", "spam"]
    assert model.output == ("sigmoid" if output == "auto" else "softmax")
    assert model.layer_sizes == [5, 8, 1 if output == "auto" else 2]
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    predicted = model.predict(X)
    np.testing.assert_array_equal(predicted, np.array(model.classes)[proba.argmax(axis=1)])
    assert set(predicted.tolist()) <= {"ham", "spam"}
    assert model.score(X, labels) > 0.9


def test_model_predicts_raw_features_with_training_statistics() -> None:
    X, y = _blobs(k=3)
    shifted = X * 1000 + 5e4  # the model standardises; scale and offset must not matter
    model = train(shifted, y + 10, TrainConfig(hidden_layers=(8,), epochs=30, learning_rate=0.01)).model
    assert model.classes == [10, 11, 12]
    assert model.score(shifted, y + 10) > 0.9
    assert model.n_features == 5 and model.n_parameters == 5 * 8 + 8 + 8 * 3 + 3
    assert model.config["epochs"] == 30 and model.activation == "relu"


def test_train_float64_on_request() -> None:
    X, y = _blobs()
    model = train(X, y, TrainConfig(hidden_layers=(4,), epochs=1, dtype="float64")).model
    assert all(W.dtype == np.float64 for W, _ in model.params)
    model32 = train(X, y, TrainConfig(hidden_layers=(4,), epochs=1)).model
    assert all(W.dtype == np.float32 and b.dtype == np.float32 for W, b in model32.params)


@pytest.mark.parametrize(
    ("X", "y", "error", "match"),
    [
        (
            np.array([[0.0, np.nan]] * 4),
            [0, 1, 0, 1],
            ValueError,
            r"X contains NaN or infinity \(first at row 0",
        ),
        (np.array([[0.0, 1.0]] * 3 + [[np.inf, 0.0]]), [0, 1, 0, 1], ValueError, "row 3, column 0"),
        (np.zeros(4), [0, 1, 0, 1], ValueError, "X must be 2-D"),
        (np.zeros((0, 3)), [], ValueError, "X is empty"),
        (np.zeros((4, 2)), [0, 1, 0], ValueError, r"len\(y\) = 3 but X has 4 rows"),
        (np.zeros((4, 2)), [1, 1, 1, 1], ValueError, "at least 2 classes"),
        (np.array([["a", "b"]] * 4), [0, 1, 0, 1], TypeError, "X must hold numbers"),
        (np.zeros((4, 2)), [0.5, 1, 0, 1], TypeError, "non-integer"),
        (np.zeros((4, 2)), [[0, 1], [1, 0], [0, 1], [1, 0]], ValueError, "y must be 1-D"),
    ],
)
def test_train_rejects_bad_data(X: Any, y: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        train(X, y, TrainConfig(epochs=1))


def test_train_rejects_sigmoid_for_three_classes() -> None:
    X, y = _blobs(k=3)
    with pytest.raises(ValueError, match="output 'sigmoid' needs exactly 2 classes, got 3"):
        train(X, y, TrainConfig(output="sigmoid", epochs=1))


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("hidden_layers", [8, 0], ValueError, r"hidden_layers must be positive, got 0"),
        ("hidden_layers", [8, "x"], TypeError, "hidden_layers must hold ints"),
        ("activation", "swish", ValueError, "unknown activation 'swish'"),
        ("optimizer", "rmsprop", ValueError, "unknown optimizer 'rmsprop'"),
        ("output", "linear", ValueError, "unknown output 'linear'"),
        ("batch_size", 0, ValueError, "batch_size must be >= 1, got 0"),
        ("learning_rate", 0.0, ValueError, "learning_rate must be in"),
        ("learning_rate", -1, ValueError, "learning_rate must be in"),
        ("learning_rate", float("nan"), ValueError, "learning_rate must be in"),
        ("epochs", 2.5, TypeError, "epochs must be an int, got 2.5"),
        ("validation_fraction", 1.0, ValueError, "validation_fraction"),
        ("dtype", "float16", ValueError, "unknown dtype 'float16'"),
        ("clip_norm", 0, ValueError, "clip_norm"),
        ("early_stopping", "yes", TypeError, "early_stopping must be true or false"),
        ("seed", -1, ValueError, "seed must be >= 0"),
    ],
)
def test_train_config_rejects_bad_values(field: str, value: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TrainConfig.from_dict({field: value})


def test_train_config_dict_round_trip_and_strictness() -> None:
    config = TrainConfig(hidden_layers=(32, 16), optimizer="nesterov", clip_norm=2.0)
    data = config.to_dict()
    assert data["hidden_layers"] == [32, 16]
    assert TrainConfig.from_dict(data) == config
    with pytest.raises(ValueError, match=r"unknown TrainConfig key.*learning_rat"):
        TrainConfig.from_dict({"learning_rat": 0.1})
    with pytest.raises(TypeError):
        train(np.zeros((4, 2)), [0, 1, 0, 1], {"epochs": 1})  # type: ignore[arg-type]


def test_training_run_epoch_after_finish_raises() -> None:
    X, y = _blobs()
    run = Training(X, y, TrainConfig(hidden_layers=(4,), epochs=1))
    run.run_epoch()
    assert run.finished and run.epoch == 1
    with pytest.raises(RuntimeError, match="finished"):
        run.run_epoch()


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_training_steps_equal_reference_backprop_and_optimizer(optimizer: str) -> None:
    """Full-batch epochs of the fused trainer equal backprop() plus the optimizer's closed form."""
    from engine import OPTIMIZERS, backprop, init_params
    from engine.losses import targets
    from engine.optimizers import Hyperparameters, apply

    X, y = _blobs(n=40, k=3)
    lr, l2 = 0.05, 0.01
    config = TrainConfig(
        hidden_layers=(7, 5),
        activation="tanh",
        epochs=3,
        batch_size=40,
        optimizer=optimizer,
        learning_rate=lr,
        l2=l2,
        validation_fraction=0.0,
        standardize=False,
        dtype="float64",
        seed=11,
    )
    trained = train(X, y, config).model.params

    params = init_params([5, 7, 5, 3], "tanh", np.random.default_rng(11), np.float64)
    flat = np.concatenate([W.ravel() for W, _ in params] + [b for _, b in params])
    state = OPTIMIZERS[optimizer].init(flat)
    n_weights = sum(W.size for W, _ in params)
    for t in (1, 2, 3):
        _, grads = backprop(params, X, targets(y, 3, "softmax"), "tanh", "softmax", l2)
        g = np.concatenate([dW.ravel() for dW, _ in grads] + [db for _, db in grads])
        apply(OPTIMIZERS[optimizer], flat, g, state, t, lr, Hyperparameters(n_decay=n_weights))
        offset, rebuilt = 0, []
        for W, _ in params:
            rebuilt.append(flat[offset : offset + W.size].reshape(W.shape))
            offset += W.size
        biases = []
        for _, b in params:
            biases.append(flat[offset : offset + b.size])
            offset += b.size
        params = [(W.copy(), b.copy()) for W, b in zip(rebuilt, biases, strict=True)]
    for (W, b), (rW, rb) in zip(trained, params, strict=True):
        np.testing.assert_allclose(W, rW, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, rb, rtol=1e-9, atol=1e-12)


def test_train_rejects_values_beyond_float32() -> None:
    X, y = _blobs()
    X[3, 1] = 1e300
    with pytest.raises(ValueError, match="beyond float32's range"):
        Training(X, y, TrainConfig(epochs=1))
    Training(X, y, TrainConfig(epochs=1, dtype="float64"))  # fine in float64


def test_predict_rejects_rows_that_overflow() -> None:
    X, y = _blobs()
    model = train(X, y, TrainConfig(hidden_layers=(4,), epochs=1)).model
    rows = np.zeros((3, 5))
    rows[2, 0] = 1e300
    with pytest.raises(ValueError, match="X row 2 is too large"):
        model.predict(rows)


def test_train_clip_norm_bounds_every_step() -> None:
    X, y = _blobs(n=64)
    base = {"hidden_layers": [8], "epochs": 1, "batch_size": 16, "optimizer": "sgd", "learning_rate": 0.1}
    base |= {"validation_fraction": 0.0, "l2": 0.0, "dtype": "float64"}

    def displacement(**overrides: Any) -> float:
        run = Training(X, y, TrainConfig.from_dict({**base, **overrides}))
        start = run._ws.theta.copy()
        run.run_epoch()
        return float(np.linalg.norm(run._ws.theta - start))

    bound = 4 * 0.1 * 1e-3  # four sgd steps of at most learning_rate * clip_norm each
    assert displacement(clip_norm=1e-3) <= bound * (1 + 1e-9)
    assert displacement() > 10 * bound


def test_train_accepts_object_and_stringdtype_labels() -> None:
    X, y_int = _blobs(n=40, k=2)
    words = ["no", "yes"]
    for labels in (
        np.array([words[i] for i in y_int], dtype=object),
        np.array([words[i] for i in y_int], dtype=np.dtypes.StringDType()),
    ):
        model = train(X, labels, TrainConfig(hidden_layers=(4,), epochs=1)).model
        assert model.classes == ["no", "yes"]
        assert 0.0 <= model.score(X, labels) <= 1.0


@pytest.mark.parametrize(
    ("output", "n_classes", "expected"),
    [
        ("auto", 2, ("sigmoid", [4, 8, 1])),
        ("auto", 3, ("softmax", [4, 8, 3])),
        ("softmax", 2, ("softmax", [4, 8, 2])),
        ("sigmoid", 2, ("sigmoid", [4, 8, 1])),
    ],
)
def test_train_config_network_shape_chooses_the_output_layer(
    output: str, n_classes: int, expected: tuple[str, list[int]]
) -> None:
    shape = TrainConfig(hidden_layers=(8,), output=output).network_shape(4, n_classes)
    assert (shape.output, shape.layer_sizes) == expected
    assert shape.n_parameters == (4 + 1) * 8 + (8 + 1) * expected[1][-1]


def test_training_layer_sizes_come_from_network_shape() -> None:
    X, y = _blobs(k=2)
    run = Training(X, y, TrainConfig(hidden_layers=(3,), epochs=1))
    assert run.layer_sizes == list(TrainConfig(hidden_layers=(3,)).network_shape(X.shape[1], 2).layer_sizes)
    assert run.n_parameters == TrainConfig(hidden_layers=(3,)).network_shape(X.shape[1], 2).n_parameters


def test_training_init_starts_from_given_weights() -> None:
    X, y = _blobs()
    config = TrainConfig(hidden_layers=(6,), epochs=3, validation_fraction=0.0, seed=1)
    parent = train(X, y, config).model
    continued = Training(
        X, y, TrainConfig(hidden_layers=(6,), epochs=1, learning_rate=1e-12, seed=9), init=parent.params
    )
    fresh = Training(X, y, TrainConfig(hidden_layers=(6,), epochs=1, learning_rate=1e-12, seed=9))
    continued.run_epoch()
    fresh.run_epoch()
    for (W, _), (W_parent, _), (W_fresh, _) in zip(
        continued.result().model.params, parent.params, fresh.result().model.params, strict=True
    ):
        np.testing.assert_allclose(W, W_parent, atol=1e-6)
        assert not np.allclose(W_fresh, W_parent, atol=1e-3)


def test_training_init_with_other_shape_names_the_layer() -> None:
    X, y = _blobs()
    parent = train(X, y, TrainConfig(hidden_layers=(6,), epochs=1)).model
    with pytest.raises(ValueError, match=r"init layer 0: W \(5, 6\)"):
        Training(X, y, TrainConfig(hidden_layers=(7,), epochs=1), init=parent.params)
    with pytest.raises(ValueError, match="init has 2 layers"):
        Training(X, y, TrainConfig(hidden_layers=(6, 6), epochs=1), init=parent.params)
