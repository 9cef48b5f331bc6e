"""backprop / forward / init_params: gradients against finite differences and a hand-worked network."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from engine import ACTIVATIONS, backprop, forward, init_params
from engine.losses import targets
from engine.network import Params
from engine.workspace import Workspace


def _random_net(rng: np.random.Generator, sizes: list[int], activation: str, dtype: Any = np.float64) -> Params:
    params = init_params(sizes, activation, rng, dtype)
    # Non-zero biases so that every term of the gradient is exercised.
    return [(W, (0.1 * rng.standard_normal(b.shape)).astype(dtype)) for W, b in params]


def _problem(
    rng: np.random.Generator, output: str, m: int = 9, n_in: int = 4
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    k = 3 if output == "softmax" else 2
    X = rng.standard_normal((m, n_in))
    y = rng.integers(0, k, m)
    sizes = [n_in, 6, 5, k if output == "softmax" else 1]  # two hidden layers
    return X, targets(y, k, output), sizes


def _numerical_grads(params: Params, X: np.ndarray, Y: np.ndarray, act: str, out: str, l2: float) -> Params:
    eps = 1e-6
    grads: Params = []
    for W, b in params:
        pair = []
        for arr in (W, b):
            g = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                saved = arr[idx]
                arr[idx] = saved + eps
                plus = backprop(params, X, Y, act, out, l2)[0]
                arr[idx] = saved - eps
                minus = backprop(params, X, Y, act, out, l2)[0]
                arr[idx] = saved
                g[idx] = (plus - minus) / (2 * eps)
            pair.append(g)
        grads.append((pair[0], pair[1]))
    return grads


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_backprop_matches_finite_differences(activation: str, output: str, l2: float) -> None:
    rng = np.random.default_rng(42)
    X, Y, sizes = _problem(rng, output)
    params = _random_net(rng, sizes, activation)
    _, grads = backprop(params, X, Y, activation, output, l2)
    numerical = _numerical_grads(params, X, Y, activation, output, l2)
    worst = 0.0
    for (dW, db), (nW, nb) in zip(grads, numerical, strict=True):
        for analytic, approx in ((dW, nW), (db, nb)):
            scale = max(np.abs(analytic).max(), np.abs(approx).max(), 1e-12)
            worst = max(worst, float(np.abs(analytic - approx).max() / scale))
    assert worst < 1e-6, f"max relative error {worst:.2e}"


def test_backprop_tiny_network_by_hand() -> None:
    # x = (1, 2) -> one relu unit -> softmax over two classes, target class 0.
    X = np.array([[1.0, 2.0]])
    W0, b0 = np.array([[0.1], [0.2]]), np.array([0.0])
    W1, b1 = np.array([[1.0, -1.0]]), np.array([0.0, 0.0])
    Y = np.array([[1.0, 0.0]])
    l2 = 0.5
    loss, grads = backprop([(W0, b0), (W1, b1)], X, Y, "relu", "softmax", l2)
    # z1 = 0.1 + 0.4 = 0.5 = a1; logits (0.5, -0.5); p0 = e^.5 / (e^.5 + e^-.5) = 1 / (1 + e^-1).
    s = 1 / (1 + math.e)  # p1 = 1 - p0
    expected_loss = math.log(1 + math.exp(-1)) + l2 / 2 * (0.01 + 0.04 + 1 + 1)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    dZ2 = np.array([[-s, s]])  # p - y
    (dW0, db0), (dW1, db1) = grads
    np.testing.assert_allclose(dW1, 0.5 * dZ2 + l2 * W1, rtol=1e-12)
    np.testing.assert_allclose(db1, dZ2[0], rtol=1e-12)
    dZ1 = -2 * s  # dZ2 @ W1.T = -s - s; relu'(0.5) = 1
    np.testing.assert_allclose(dW0, np.array([[dZ1], [2 * dZ1]]) + l2 * W0, rtol=1e-12)
    np.testing.assert_allclose(db0, [dZ1], rtol=1e-12)


def test_backprop_keeps_float32() -> None:
    rng = np.random.default_rng(3)
    X, Y, sizes = _problem(rng, "softmax")
    params = _random_net(rng, sizes, "tanh", np.float32)
    loss, grads = backprop(params, X.astype(np.float32), Y.astype(np.float32), "tanh", "softmax", 0.1)
    assert isinstance(loss, float)
    assert len(grads) == len(params)
    for (W, b), (dW, db) in zip(params, grads, strict=True):
        assert dW.dtype == np.float32 and db.dtype == np.float32
        assert dW.shape == W.shape and db.shape == b.shape


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_backprop_extreme_logits_are_finite(output: str) -> None:
    # One linear layer that maps the inputs to logits of +-1e4, with the targets on the wrong side.
    X = np.array([[1.0], [-1.0]])
    if output == "softmax":
        W, b = np.array([[1e4, -1e4]]), np.zeros(2)
        Y = np.array([[0.0, 1.0], [1.0, 0.0]])
        expected_loss = 2e4  # -log softmax = 2e4 for each sample
    else:
        W, b = np.array([[1e4]]), np.zeros(1)
        Y = np.array([[0.0], [1.0]])
        expected_loss = 1e4
    loss, grads = backprop([(W, b)], X, Y, "relu", output)
    assert math.isfinite(loss)
    assert loss == pytest.approx(expected_loss)
    for dW, db in grads:
        assert np.isfinite(dW).all() and np.isfinite(db).all()
    # p is one-hot on the wrong class: dW = X.T (P - Y) / m is exactly computable.
    P = forward([(W, b)], X, "relu", output)
    np.testing.assert_allclose(grads[0][0], X.T @ (P - Y) / 2)
    assert np.abs(grads[0][0]).max() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_workspace_extreme_logits_are_finite(dtype: Any) -> None:
    ws = Workspace([1, 2], "relu", "softmax", dtype, 0.0)
    ws.set_params([(np.array([[1e4, -1e4]], dtype=dtype), np.zeros(2, dtype=dtype))])
    bf = ws.buffers(2)
    bf.X[...] = [[1.0], [-1.0]]
    bf.Y[...] = [[0.0, 1.0], [1.0, 0.0]]
    a, b = np.empty(2, dtype=dtype), np.empty(2, dtype=dtype)
    ws.step(bf, a, b)
    loss, accuracy = ws.epoch_loss_and_accuracy(a, b, None)
    assert loss == pytest.approx(2e4) and accuracy == 0.0
    assert np.isfinite(ws.grad).all()


@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_workspace_step_equals_backprop(activation: str, output: str, l2: float) -> None:
    """The trainer's fused step computes the same loss and gradients as the reference backprop."""
    rng = np.random.default_rng(7)
    X, Y, sizes = _problem(rng, output, m=13)
    params = _random_net(rng, sizes, activation)
    loss, grads = backprop(params, X, Y, activation, output, l2)
    ws = Workspace(sizes, activation, output, np.float64, l2)
    ws.set_params(params)
    bf = ws.buffers(13)
    bf.X[...] = X
    bf.Y[...] = Y
    a, b = np.empty(13), np.empty(13)
    ws.step(bf, a, b)
    y_idx = Y[:, 0].astype(np.intp) if output == "sigmoid" else None
    fused_loss, _ = ws.epoch_loss_and_accuracy(a, b, y_idx)
    assert fused_loss + ws.penalty() == pytest.approx(loss, rel=1e-12)
    for (dW, db), (fW, fb) in zip(grads, ws.grads(), strict=True):
        np.testing.assert_allclose(fW, dW, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(fb, db, rtol=1e-10, atol=1e-14)


def test_forward_probabilities_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    params = init_params([4, 8, 5], "relu", rng, np.float32)
    P = forward(params, rng.standard_normal((6, 4)).astype(np.float32), "relu", "softmax")
    assert P.shape == (6, 5) and P.dtype == np.float32
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    assert (P > 0).all()


def test_init_params_schemes() -> None:
    rng = np.random.default_rng(0)
    he = init_params([400, 300, 10], "relu", rng, np.float64)
    assert he[0][0].std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    glorot = init_params([400, 300, 10], "tanh", rng, np.float64)
    limit = math.sqrt(6 / 700)
    assert np.abs(glorot[0][0]).max() <= limit
    assert glorot[0][0].std() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    for _, b in he + glorot:
        assert not b.any()
    same = init_params([400, 300, 10], "relu", np.random.default_rng(5), np.float32)
    again = init_params([400, 300, 10], "relu", np.random.default_rng(5), np.float32)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(same, again, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"activation": "swish"}, ValueError, "activation 'swish'"),
        ({"output": "linear"}, ValueError, "output 'linear'"),
        ({"l2": -1.0}, ValueError, "l2"),
        ({"Y": np.zeros((3, 2))}, ValueError, "Y must have shape"),
        ({"X": np.zeros((3, 5))}, ValueError, "X must have shape"),
    ],
)
def test_backprop_rejects_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    params = init_params([4, 3], "relu", np.random.default_rng(0), np.float64)
    args: dict[str, Any] = {"X": np.zeros((3, 4)), "Y": np.zeros((3, 3))}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        backprop(params, **args)


def test_init_params_rejects_bad_layer_sizes() -> None:
    with pytest.raises(ValueError, match="layer_sizes must be positive, got 0"):
        init_params([4, 0, 2], "relu")
    with pytest.raises(ValueError, match="at least input and output"):
        init_params([4], "relu")
    with pytest.raises(ValueError, match="activation 'gelu'"):
        init_params([4, 2], "gelu")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_workspace_step_equals_backprop_on_large_layers(activation: str) -> None:
    """Layers of more than 4,096 elements per batch take other in-place kernels; same gradients."""
    rng = np.random.default_rng(8)
    sizes, m = [6, 80, 70, 4], 64
    X = rng.standard_normal((m, 6))
    Y = targets(rng.integers(0, 4, m), 4, "softmax")
    params = _random_net(rng, sizes, activation)
    loss, grads = backprop(params, X, Y, activation, "softmax", 0.0)
    ws = Workspace(sizes, activation, "softmax", np.float64, 0.0)
    ws.set_params(params)
    bf = ws.buffers(m)
    bf.X[...] = X
    bf.Y[...] = Y
    a, b = np.empty(m), np.empty(m)
    ws.step(bf, a, b)
    assert ws.epoch_loss_and_accuracy(a, b, None)[0] == pytest.approx(loss, rel=1e-12)
    for (dW, db), (fW, fb) in zip(grads, ws.grads(), strict=True):
        np.testing.assert_allclose(fW, dW, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(fb, db, rtol=1e-10, atol=1e-14)
