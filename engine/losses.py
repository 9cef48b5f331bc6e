"""Output layers and the cross-entropy loss, computed stably from the logits.

Two output layers:

* ``softmax`` over ``k`` units, with one-hot targets ``Y`` of shape (m, k);
* ``sigmoid`` with a single unit for two classes, targets ``Y`` of shape (m, 1) holding 0/1
  (``p(y | x) = p**y (1 - p)**(1 - y)``).

For both, the derivative of the mean cross-entropy with respect to the logits ``Z_L`` is
``(A_L - Y) / m``: the softmax (or sigmoid) Jacobian and the ``-Y / A`` of the log cancel exactly. That is
why the backward pass starts from ``dZ[L] = A[L] - Y`` and never forms ``dA[L]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.activations import sigmoid

Array = NDArray[Any]

OUTPUTS = ("softmax", "sigmoid")
"""Output layers :func:`engine.backprop` understands (``TrainConfig.output`` also takes ``"auto"``)."""


def one_hot(y: NDArray[np.integer[Any]], n_classes: int, dtype: Any = np.float64) -> Array:
    """Encode class indices as one-hot rows.

    Parameters
    ----------
    y : ndarray of int, shape (m,)
        Class indices in ``[0, n_classes)``.
    n_classes : int
        Number of columns ``k``.
    dtype : dtype, default float64

    Returns
    -------
    Y : ndarray, shape (m, k)
    """
    Y = np.zeros((len(y), n_classes), dtype=dtype)
    Y[np.arange(len(y)), y] = 1
    return Y


def targets(y: NDArray[np.integer[Any]], n_classes: int, output: str, dtype: Any = np.float64) -> Array:
    """Targets ``Y`` for ``output``: one-hot (m, k) for softmax, a (m, 1) column of 0/1 for sigmoid."""
    if output == "sigmoid":
        return np.asarray(y, dtype=dtype).reshape(-1, 1)
    return one_hot(y, n_classes, dtype)


def softmax(Z: Array) -> Array:
    """Row-wise softmax, shape (m, k) -> (m, k).

    Each row is shifted by its maximum first: ``softmax(z) = softmax(z - max z)`` and after the shift the
    largest exponent is ``exp(0) = 1``, so nothing overflows even for logits of 1e4.
    """
    S = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(S)
    out: Array = E / E.sum(axis=1, keepdims=True)
    return out


def output_activation(Z: Array, output: str) -> Array:
    """Probabilities from logits: softmax (m, k) -> (m, k), or sigmoid (m, 1) -> (m, 1)."""
    if output == "sigmoid":
        return sigmoid(Z)
    return softmax(Z)


def cross_entropy(Z: Array, Y: Array, output: str) -> float:
    """Mean cross-entropy of logits ``Z`` against targets ``Y`` (no penalty term).

    Parameters
    ----------
    Z : ndarray, shape (m, k) or (m, 1)
        Logits of the output layer (before softmax / sigmoid).
    Y : ndarray, same shape as ``Z``
        One-hot rows (softmax) or 0/1 (sigmoid).
    output : {"softmax", "sigmoid"}

    Returns
    -------
    float
        ``-mean_i sum_j Y_ij log A_ij``, computed from the logits so that it stays finite for any finite
        ``Z`` (``log A`` itself would be ``log 0 = -inf`` once a probability underflows).
    """
    m = Z.shape[0]
    if output == "sigmoid":
        # -y log s(z) - (1 - y) log(1 - s(z)) = log(1 + e^z) - y z, and log(1 + e^z) = logaddexp(0, z).
        per_sample = np.logaddexp(0, Z) - Y * Z
        return float(per_sample.sum(dtype=np.float64) / m)
    # log softmax(z)_j = z_j - logsumexp(z); logsumexp(z) = max z + log sum exp(z - max z) (log-sum-exp).
    S = Z - Z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(S).sum(axis=1))
    total = (log_sum * Y.sum(axis=1)).sum(dtype=np.float64) - (S * Y).sum(dtype=np.float64)
    return float(total / m)
