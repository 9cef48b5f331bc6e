"""Hidden-layer activations and their derivatives.

Two tables live here:

* :data:`ACTIVATIONS` -- the public, readable reference: ``name -> (f, f_prime)``, both taking the
  pre-activation ``Z`` and returning a new array. :func:`engine.backprop` uses it.
* ``INPLACE`` -- the trainer's fast versions: the forward pass overwrites ``Z`` with ``A = f(Z)``, and
  the backward pass multiplies ``dA`` in place by ``f'(Z)`` *expressed through A* (``relu'(Z) = [A > 0]``,
  ``tanh'(Z) = 1 - A**2``, ``sigmoid'(Z) = A (1 - A)``), so ``Z`` never has to be kept next to ``A``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]

LEAKY_SLOPE = 0.01
"""Slope of ``leaky_relu`` for negative inputs."""


def relu(Z: Array) -> Array:
    """``max(Z, 0)``, elementwise; same shape and dtype as ``Z``."""
    return np.maximum(Z, 0)


def relu_prime(Z: Array) -> Array:
    """``1`` where ``Z > 0`` else ``0`` (the subgradient at 0 is taken as 0)."""
    return (Z > 0).astype(Z.dtype)


def leaky_relu(Z: Array) -> Array:
    """``Z`` where ``Z > 0`` else ``0.01 * Z``."""
    return np.where(Z > 0, Z, Z * LEAKY_SLOPE)


def leaky_relu_prime(Z: Array) -> Array:
    """``1`` where ``Z > 0`` else ``0.01``."""
    return np.where(Z > 0, 1.0, LEAKY_SLOPE).astype(Z.dtype)


def tanh(Z: Array) -> Array:
    """Hyperbolic tangent."""
    return np.tanh(Z)


def tanh_prime(Z: Array) -> Array:
    """``1 - tanh(Z)**2``."""
    T = np.tanh(Z)
    return 1 - T * T


def sigmoid(Z: Array) -> Array:
    """Logistic function ``1 / (1 + exp(-Z))`` without overflow.

    ``exp`` is only ever taken of ``-|Z|`` (<= 0), so it cannot overflow for any finite input.
    """
    E = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1 / (1 + E), E / (1 + E)).astype(Z.dtype, copy=False)


def sigmoid_prime(Z: Array) -> Array:
    """``s (1 - s)`` with ``s = sigmoid(Z)``."""
    S = sigmoid(Z)
    out: Array = S * (1 - S)
    return out


def identity(Z: Array) -> Array:
    """``Z`` unchanged (a copy)."""
    return Z.copy()


def identity_prime(Z: Array) -> Array:
    """Ones."""
    return np.ones_like(Z)


ActivationFn = Callable[[Array], Array]

ACTIVATIONS: dict[str, tuple[ActivationFn, ActivationFn]] = {
    "relu": (relu, relu_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
    "tanh": (tanh, tanh_prime),
    "sigmoid": (sigmoid, sigmoid_prime),
    "identity": (identity, identity_prime),
}
"""Hidden activation name -> ``(f, f')``; both map ``Z`` (any shape) to a new array of the same shape."""

RELU_FAMILY = frozenset({"relu", "leaky_relu"})
"""Activations initialised with He's scheme (the others use Glorot's)."""


# --- in-place versions used by the trainer's fused step ------------------------------------------------


# Below this many elements a NumPy call costs about the same whatever it does, so the fewest calls win;
# above it, the cheapest passes over memory win (measured on float32 batches of 32 x 32 and 128 x 256).
_LARGE = 4096


def _relu_forward(Z: Array, tmp: Array) -> None:
    # max(Z, 0) against an array of zeros rather than the scalar 0: NumPy's array-array loop is vectorised,
    # its array-scalar loop is not (2-3x slower on 128 x 256 float32, measured).
    tmp.fill(0)
    np.maximum(Z, tmp, out=Z)


def _relu_backward(dA: Array, A: Array, tmp: Array) -> None:
    # relu'(Z) = [Z > 0] = [A > 0]: relu keeps the sign of positive inputs and zeroes the rest. The mask is
    # made as 0.0/1.0 in A's dtype, so the multiply is a plain same-dtype loop (a bool operand is slower);
    # sign(A) is that mask because A >= 0.
    if A.size < _LARGE:
        np.sign(A, out=tmp)
    else:
        np.greater(A, 0, out=tmp, casting="unsafe")
    dA *= tmp


def _leaky_forward(Z: Array, tmp: Array) -> None:
    # max(Z, a Z) equals leaky_relu(Z) for 0 < a < 1.
    np.multiply(Z, LEAKY_SLOPE, out=tmp)
    np.maximum(Z, tmp, out=Z)


def _leaky_backward(dA: Array, A: Array, tmp: Array) -> None:
    # A has the sign of Z, so [A > 0] is [Z > 0]; the factor is a + (1 - a) [A > 0].
    np.greater(A, 0, out=tmp, casting="unsafe")
    tmp *= 1.0 - LEAKY_SLOPE
    tmp += LEAKY_SLOPE
    dA *= tmp


def _tanh_forward(Z: Array, tmp: Array) -> None:
    np.tanh(Z, out=Z)


def _tanh_backward(dA: Array, A: Array, tmp: Array) -> None:
    np.multiply(A, A, out=tmp)
    np.subtract(1, tmp, out=tmp)
    dA *= tmp


def _sigmoid_forward(Z: Array, tmp: Array) -> None:
    # sigmoid(z) = (1 + tanh(z / 2)) / 2: no exp, so no overflow for any finite z.
    Z *= 0.5
    np.tanh(Z, out=Z)
    Z *= 0.5
    Z += 0.5


def _sigmoid_backward(dA: Array, A: Array, tmp: Array) -> None:
    np.subtract(1, A, out=tmp)
    tmp *= A
    dA *= tmp


def _identity_forward(Z: Array, tmp: Array) -> None:
    return None


def _identity_backward(dA: Array, A: Array, tmp: Array) -> None:
    return None


class InPlaceActivation(NamedTuple):
    """``forward(Z, tmp)`` overwrites Z with f(Z); ``backward(dA, A, tmp)`` does ``dA *= f'(Z)``.

    ``tmp`` is scratch of Z's shape and dtype.
    """

    forward: Callable[[Array, Array], None]
    backward: Callable[[Array, Array, Array], None]


INPLACE: dict[str, InPlaceActivation] = {
    "relu": InPlaceActivation(_relu_forward, _relu_backward),
    "leaky_relu": InPlaceActivation(_leaky_forward, _leaky_backward),
    "tanh": InPlaceActivation(_tanh_forward, _tanh_backward),
    "sigmoid": InPlaceActivation(_sigmoid_forward, _sigmoid_backward),
    "identity": InPlaceActivation(_identity_forward, _identity_backward),
}
