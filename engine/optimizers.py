"""Optimizers as ``init`` / ``update`` pairs with explicit state (in the manner of optax).

Every optimizer works on one flat parameter vector ``theta`` and its gradient ``grad`` (the trainer keeps
all ``W`` and ``b`` as views into one contiguous buffer), so one update is a handful of NumPy calls for the
whole network however deep it is. ``state`` is a dict of arrays shaped like ``theta``; it is what a training
checkpoint stores. ``t`` is the 1-based step count (Adam's bias correction needs it).

``update`` changes ``theta`` and ``state`` in place; it may overwrite ``grad`` and ``scratch``. sgd,
momentum and nesterov only ever use ``learning_rate * grad``; with ``learning_rate == 1.0`` they skip that
product, so a caller that already has ``lr * g`` (the trainer folds lr into its backward pass) passes 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
State = dict[str, Array]


@dataclass(frozen=True)
class Hyperparameters:
    """Optimizer settings other than the learning rate (which a schedule changes per epoch).

    ``n_decay``: decoupled weight decay (Adam only) applies to ``theta[:n_decay]`` -- the trainer puts all
    weights first and the biases last, so biases are not decayed. ``None`` means all of ``theta``.
    """

    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0
    n_decay: int | None = None


UpdateFn = Callable[[Array, Array, State, int, float, Hyperparameters, Array], None]


@dataclass(frozen=True)
class Optimizer:
    """An ``init(theta) -> state`` / ``update(theta, grad, state, t, learning_rate, hp, scratch)`` pair.

    ``linear_in_lr``: the update depends on ``learning_rate`` and ``grad`` only through their product.
    """

    name: str
    slots: tuple[str, ...]
    update: UpdateFn
    linear_in_lr: bool

    def init(self, theta: Array) -> State:
        """Zero state for ``theta`` (one array per slot, same shape and dtype)."""
        return {slot: np.zeros_like(theta) for slot in self.slots}


def _sgd(theta: Array, grad: Array, state: State, t: int, lr: float, hp: Hyperparameters, scratch: Array) -> None:
    # theta <- theta - lr g
    if lr != 1.0:
        grad *= lr
    theta -= grad


def _momentum(theta: Array, grad: Array, state: State, t: int, lr: float, hp: Hyperparameters, scratch: Array) -> None:
    # v <- mu v - lr g;  theta <- theta + v
    v = state["velocity"]
    v *= hp.momentum
    if lr != 1.0:
        grad *= lr
    v -= grad
    theta += v


def _nesterov(theta: Array, grad: Array, state: State, t: int, lr: float, hp: Hyperparameters, scratch: Array) -> None:
    # v <- mu v - lr g;  theta <- theta + mu v - lr g  (Sutskever et al.'s form, as in scikit-learn)
    v = state["velocity"]
    v *= hp.momentum
    if lr != 1.0:
        grad *= lr
    v -= grad
    theta -= grad
    np.multiply(v, hp.momentum, out=scratch)
    theta += scratch


def _adam(theta: Array, grad: Array, state: State, t: int, lr: float, hp: Hyperparameters, scratch: Array) -> None:
    # m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    # theta <- theta - lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)
    # Computed as lr sqrt(c2) / c1 * m / (sqrt(v) + eps sqrt(c2)) with c = 1 - b^t: the same number, but
    # the bias corrections become two scalars instead of two passes over the parameters.
    # Decoupled weight decay (AdamW): theta <- theta - lr wd theta, before the Adam step.
    m, v = state["m"], state["v"]
    if hp.weight_decay:
        decayed = theta if hp.n_decay is None else theta[: hp.n_decay]
        decayed *= 1.0 - lr * hp.weight_decay
    m *= hp.beta1
    np.multiply(grad, 1.0 - hp.beta1, out=scratch)
    m += scratch
    v *= hp.beta2
    np.multiply(grad, grad, out=scratch)
    scratch *= 1.0 - hp.beta2
    v += scratch
    c1 = 1.0 - hp.beta1**t
    sqrt_c2 = math.sqrt(1.0 - hp.beta2**t)
    np.sqrt(v, out=scratch)
    scratch += hp.epsilon * sqrt_c2
    np.divide(m, scratch, out=scratch)
    scratch *= lr * sqrt_c2 / c1
    theta -= scratch


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer("sgd", (), _sgd, linear_in_lr=True),
    "momentum": Optimizer("momentum", ("velocity",), _momentum, linear_in_lr=True),
    "nesterov": Optimizer("nesterov", ("velocity",), _nesterov, linear_in_lr=True),
    "adam": Optimizer("adam", ("m", "v"), _adam, linear_in_lr=False),
}
"""Optimizer name -> :class:`Optimizer`."""


def clip_by_global_norm(grad: Array, clip_norm: float) -> float:
    """Scale ``grad`` in place so that its L2 norm is at most ``clip_norm``; return the norm before."""
    norm = math.sqrt(float(np.vdot(grad, grad)))
    if norm > clip_norm:
        grad *= clip_norm / norm
    return norm


def apply(
    optimizer: Optimizer,
    theta: Array,
    grad: Array,
    state: State,
    t: int,
    learning_rate: float,
    hp: Hyperparameters | None = None,
) -> None:
    """Convenience wrapper: one update with a fresh scratch buffer (``grad`` is not modified)."""
    optimizer.update(theta, grad.copy(), state, t, float(learning_rate), hp or Hyperparameters(), np.empty_like(theta))
