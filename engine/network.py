"""Parameters, the forward pass and backpropagation of a fully-connected classifier.

This is the readable reference implementation of the spec; the trainer runs a fused, preallocated
version of the same arithmetic (``engine.workspace``) that the tests check against :func:`backprop`.

Notation: ``params = [(W_0, b_0), ..., (W_{L-1}, b_{L-1})]`` with ``W_l`` of shape (n_l, n_{l+1}) and
``b_l`` of shape (n_{l+1},); ``A_0 = X``; ``Z_{l+1} = A_l @ W_l + b_l``; ``A_{l+1} = f(Z_{l+1})`` for the
hidden layers and the softmax / sigmoid of ``Z_L`` for the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.activations import ACTIVATIONS, RELU_FAMILY
from engine.losses import OUTPUTS, cross_entropy, output_activation

Array = NDArray[Any]
Params = list[tuple[Array, Array]]

DTYPES = ("float32", "float64")


def check_activation(activation: object, name: str = "activation") -> str:
    """Return ``activation`` if it names a hidden activation, else raise naming the argument."""
    if not isinstance(activation, str):
        raise TypeError(f"{name} must be a string, got {type(activation).__name__}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown {name} {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    return activation


def check_output(output: object, name: str = "output") -> str:
    """Return ``output`` if it is ``"softmax"`` or ``"sigmoid"``, else raise naming the argument."""
    if not isinstance(output, str):
        raise TypeError(f"{name} must be a string, got {type(output).__name__}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown {name} {output!r}; expected one of {list(OUTPUTS)}")
    return output


def check_layer_sizes(layer_sizes: object) -> list[int]:
    """Validate ``[n_features, h_1, ..., n_out]``: at least two positive integers."""
    if isinstance(layer_sizes, str | bytes) or not isinstance(layer_sizes, Sequence):
        raise TypeError(f"layer_sizes must be a sequence of ints, got {type(layer_sizes).__name__}")
    sizes = list(layer_sizes)
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least input and output widths, got {sizes}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int | np.integer):
            raise TypeError(f"layer_sizes must hold ints, got {size!r} in {sizes}")
        if size < 1:
            raise ValueError(f"layer_sizes must be positive, got {size} in {sizes}")
    return [int(s) for s in sizes]


def check_params(params: object) -> Params:
    """Validate ``[(W, b), ...]``: 2-D W, 1-D b, shapes that chain, one float dtype."""
    if not isinstance(params, Sequence) or len(params) == 0:
        raise TypeError("params must be a non-empty list of (W, b) pairs")
    checked: Params = []
    dtype = None
    for i, pair in enumerate(params):
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"params[{i}] must be a (W, b) pair")
        W, b = pair
        if not isinstance(W, np.ndarray) or not isinstance(b, np.ndarray):
            raise TypeError(f"params[{i}] must hold NumPy arrays")
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(f"params[{i}]: W must be (n_in, n_out) and b (n_out,), got {W.shape} and {b.shape}")
        if i > 0 and W.shape[0] != checked[-1][0].shape[1]:
            n_prev = checked[-1][0].shape[1]
            raise ValueError(f"params[{i}]: W has {W.shape[0]} inputs, params[{i - 1}] has {n_prev} outputs")
        if W.dtype.name not in DTYPES or b.dtype != W.dtype or (dtype is not None and W.dtype != dtype):
            raise TypeError(f"params[{i}]: expected one dtype among {DTYPES}, got {W.dtype} and {b.dtype}")
        dtype = W.dtype
        checked.append((W, b))
    return checked


def init_params(
    layer_sizes: Sequence[int],
    activation: str = "relu",
    rng: np.random.Generator | None = None,
    dtype: Any = np.float32,
) -> Params:
    """Random initial parameters.

    Hidden layers use He's normal initialisation (std ``sqrt(2 / n_in)``) for the relu family and
    Glorot's uniform one (limit ``sqrt(6 / (n_in + n_out))``) otherwise; the output layer, which feeds a
    softmax / sigmoid rather than the hidden activation, always uses Glorot's. Biases start at zero.

    Parameters
    ----------
    layer_sizes : sequence of int, length L + 1
        ``[n_features, h_1, ..., n_out]``.
    activation : str
        Hidden activation (decides the scheme).
    rng : numpy.random.Generator, optional
        Source of randomness; ``np.random.default_rng(0)`` if omitted.
    dtype : float32 or float64
        Values are drawn in float64 and rounded, so both dtypes start from the same numbers.

    Returns
    -------
    list of (W, b)
        ``W_l`` of shape (n_l, n_{l+1}), ``b_l`` of shape (n_{l+1},).
    """
    sizes = check_layer_sizes(layer_sizes)
    check_activation(activation)
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dt.name!r}")
    if rng is None:
        rng = np.random.default_rng(0)
    params: Params = []
    n_layers = len(sizes) - 1
    for i in range(n_layers):
        n_in, n_out = sizes[i], sizes[i + 1]
        if i < n_layers - 1 and activation in RELU_FAMILY:
            W = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
        else:
            limit = np.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-limit, limit, size=(n_in, n_out))
        params.append((W.astype(dt), np.zeros(n_out, dtype=dt)))
    return params


def _forward_pass(params: Params, X: Array, activation: str) -> tuple[list[Array], list[Array]]:
    """Pre-activations ``[Z_1, ..., Z_L]`` (``Z_L`` = logits) and activations ``[A_0 = X, ..., A_{L-1}]``."""
    f = ACTIVATIONS[activation][0]
    A = [X]
    Z: list[Array] = []
    for W, b in params:
        Z.append(A[-1] @ W + b)
        if len(Z) < len(params):
            A.append(f(Z[-1]))
    return Z, A


def forward(params: Params, X: Array, activation: str = "relu", output: str = "softmax") -> Array:
    """Output probabilities of the network.

    Parameters
    ----------
    params : list of (W, b)
    X : ndarray, shape (m, n_features)
        Already standardised features, in the dtype of ``params``.
    activation : str
        Hidden activation, a key of :data:`engine.ACTIVATIONS`.
    output : {"softmax", "sigmoid"}

    Returns
    -------
    A_L : ndarray, shape (m, k) for softmax (rows sum to 1), (m, 1) for sigmoid (``p(y = 1)``)
    """
    params = check_params(params)
    check_activation(activation)
    check_output(output)
    X = np.asarray(X, dtype=params[0][0].dtype)
    if X.ndim != 2 or X.shape[1] != params[0][0].shape[0]:
        raise ValueError(f"X must have shape (m, {params[0][0].shape[0]}), got {X.shape}")
    Z, _ = _forward_pass(params, X, activation)
    return output_activation(Z[-1], output)


# Over 60 lines only for its docstring; the input checks and the one backward pass read best unsplit.
def backprop(
    params: Params,
    X: Array,
    Y: Array,
    activation: str = "relu",
    output: str = "softmax",
    l2: float = 0.0,
) -> tuple[float, Params]:
    """Loss and its gradient with respect to every parameter.

    ``loss = mean_i CE(A_L[i], Y[i]) + l2 / 2 * sum_l ||W_l||^2`` (biases are not penalised, and the
    penalty is not divided by the batch size).

    Parameters
    ----------
    params : list of (W, b)
        ``W_l`` of shape (n_l, n_{l+1}), ``b_l`` of shape (n_{l+1},).
    X : ndarray, shape (m, n_0)
    Y : ndarray, shape (m, k) one-hot for softmax, or (m, 1) of 0/1 for sigmoid
    activation : str
        Hidden activation.
    output : {"softmax", "sigmoid"}
    l2 : float, default 0
        Penalty strength.

    Returns
    -------
    loss : float
    grads : list of (dW, db)
        Exactly the structure, shapes and dtype of ``params`` (float32 stays float32).
    """
    params = check_params(params)
    check_activation(activation)
    check_output(output)
    dtype = params[0][0].dtype
    X = np.asarray(X, dtype=dtype)
    Y = np.asarray(Y, dtype=dtype)
    n_out = params[-1][0].shape[1]
    if X.ndim != 2 or X.shape[1] != params[0][0].shape[0] or X.shape[0] == 0:
        raise ValueError(f"X must have shape (m >= 1, {params[0][0].shape[0]}), got {X.shape}")
    if Y.shape != (X.shape[0], n_out):
        raise ValueError(f"Y must have shape {(X.shape[0], n_out)}, got {Y.shape}")
    l2 = float(l2)
    if not np.isfinite(l2) or l2 < 0:
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    fprime = ACTIVATIONS[activation][1]
    m = X.shape[0]

    Z, A = _forward_pass(params, X, activation)
    loss = cross_entropy(Z[-1], Y, output)
    if l2:
        loss += l2 / 2 * sum(float(np.vdot(W, W)) for W, _ in params)

    # dZ[L] = A[L] - Y: the output nonlinearity's Jacobian cancels against d(CE)/dA (see engine.losses).
    dZ = output_activation(Z[-1], output) - Y
    grads: Params = []
    for i in range(len(params) - 1, -1, -1):
        W, _ = params[i]
        dW = A[i].T @ dZ / m + l2 * W
        db = dZ.mean(axis=0)
        grads.append((dW.astype(dtype, copy=False), db.astype(dtype, copy=False)))
        if i > 0:
            # Z[i - 1] here is the spec's Z[i] (this list starts at the first hidden layer).
            dZ = (dZ @ W.T) * fprime(Z[i - 1])
    grads.reverse()
    return loss, grads
