"""The trainer's fused minibatch step: the arithmetic of :func:`engine.backprop`, with no allocation.

All weights and biases live in one flat vector ``theta`` (weights of every layer first, then every bias),
and ``W[l]``, ``b[l]`` are views into it; the gradient has the same layout. So an optimizer update is a few
NumPy calls for the whole network, and the matrix products write straight into the gradient's views.

Per batch size the workspace keeps one set of buffers; activations overwrite their pre-activations in
place (the derivatives are taken from ``A``, see ``engine.activations``). Two shortcuts against the
reference implementation, both exact in real arithmetic:

* ``dZ[L] = (A[L] - Y) / m`` is scaled once, so ``dW = A.T @ dZ`` and ``db = dZ.sum(0)`` need no
  division by ``m`` (backprop is linear in ``dZ``); the same scaling can carry the learning rate
  (:attr:`Workspace.grad_scale`);
* the loss is not reduced per batch: each sample's ``log sum exp`` and shifted true-class logit are written
  into per-epoch arrays and summed once at the end of the epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.activations import INPLACE
from engine.network import Params

Array = NDArray[Any]


class Buffers:
    """Preallocated arrays for batches of ``m`` rows."""

    def __init__(self, m: int, sizes: list[int], dtype: np.dtype[Any]) -> None:
        self.m = m
        self.inv_m = 1.0 / m
        self.X = np.empty((m, sizes[0]), dtype=dtype)
        self.Y = np.empty((m, sizes[-1]), dtype=dtype)
        # Z[l] holds layer l+1's pre-activation, then (hidden layers) its activation A, overwritten in place.
        self.Z = [np.empty((m, n), dtype=dtype) for n in sizes[1:]]
        self.AT = [self.X.T] + [Z.T for Z in self.Z[:-1]]
        self.dA = [np.empty((m, n), dtype=dtype) for n in sizes[1:-1]]
        self.tmp = [np.empty((m, n), dtype=dtype) for n in sizes[1:]]
        self.col = np.empty((m, 1), dtype=dtype)
        # Column sums as ones @ dZ and row sums as Z @ ones: BLAS matrix-vector products, which cost less
        # per call than NumPy's reductions on these small arrays.
        self.ones_m = np.ones(m, dtype=dtype)
        self.ones_k = np.ones(sizes[-1], dtype=dtype)


class Workspace:
    """Flat parameters, gradient and per-batch-size buffers for one network."""

    def __init__(self, layer_sizes: list[int], activation: str, output: str, dtype: Any, l2: float) -> None:
        self.sizes = list(layer_sizes)
        self.dtype = np.dtype(dtype)
        self.output = output
        self.l2 = float(l2)
        self.grad_scale = 1.0
        """:meth:`step` leaves ``grad_scale * gradient`` in :attr:`grad`. The trainer sets it to the learning
        rate for sgd / momentum / nesterov, which then skip their own multiplication by it: one pass over
        the parameters less per step."""
        self.n_layers = len(self.sizes) - 1
        shapes = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        self.n_weights = sum(i * o for i, o in shapes)
        n_total = self.n_weights + sum(o for _, o in shapes)
        self.theta = np.zeros(n_total, dtype=self.dtype)
        self.grad = np.zeros(n_total, dtype=self.dtype)
        self.scratch = np.zeros(n_total, dtype=self.dtype)
        self.W, self.b = self._views(self.theta, shapes)
        self.dW, self.db = self._views(self.grad, shapes)
        self.WT = [W.T for W in self.W]
        self.theta_W = self.theta[: self.n_weights]
        self.grad_W = self.grad[: self.n_weights]
        self.scratch_W = self.scratch[: self.n_weights]
        act = INPLACE[activation]
        self._act_forward = act.forward
        self._act_backward = act.backward
        self._buffers: dict[int, Buffers] = {}
        # exp(-60) ~ 1e-26 (float32) and exp(-600) ~ 1e-261 (float64): normal numbers with ample headroom.
        self._logit_floor = -60.0 if self.dtype == np.float32 else -600.0

    def _views(self, flat: Array, shapes: list[tuple[int, int]]) -> tuple[list[Array], list[Array]]:
        Ws, bs = [], []
        offset = 0
        for i, o in shapes:
            Ws.append(flat[offset : offset + i * o].reshape(i, o))
            offset += i * o
        for _, o in shapes:
            bs.append(flat[offset : offset + o])
            offset += o
        return Ws, bs

    def buffers(self, m: int) -> Buffers:
        """The buffers for batches of ``m`` rows (allocated on first use)."""
        bf = self._buffers.get(m)
        if bf is None:
            bf = self._buffers[m] = Buffers(m, self.sizes, self.dtype)
        return bf

    def set_params(self, params: Params) -> None:
        """Copy ``params`` into ``theta``."""
        for i, (W, b) in enumerate(params):
            self.W[i][...] = W
            self.b[i][...] = b

    def params(self, theta: Array | None = None) -> Params:
        """Independent copies of the parameters as ``[(W, b), ...]`` (from ``theta`` if given)."""
        flat = self.theta if theta is None else theta
        shapes = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        Ws, bs = self._views(flat.copy(), shapes)
        return list(zip(Ws, bs, strict=True))

    def grads(self) -> Params:
        """Independent copies of the last gradient as ``[(dW, db), ...]``."""
        return self.params(self.grad)

    # --- the step --------------------------------------------------------------------------------------

    def forward_logits(self, bf: Buffers) -> Array:
        """Hidden layers and output logits for ``bf.X``; returns ``bf.Z[-1]`` (the logits)."""
        A = bf.X
        W, b, Zs, tmp = self.W, self.b, bf.Z, bf.tmp
        forward = self._act_forward
        last = self.n_layers - 1
        for i in range(self.n_layers):
            Z = Zs[i]
            np.matmul(A, W[i], out=Z)
            Z += b[i]
            if i < last:
                forward(Z, tmp[i])
            A = Z
        return A

    def output_stats(self, bf: Buffers, stat_a: Array, stat_b: Array) -> None:
        """Per-sample numbers the loss and accuracy are made of; leaves ``bf.Z[-1]`` ready for the step.

        softmax: ``stat_a = sum_j exp(z_j - max z)``, ``stat_b = z_y - max z`` (0 exactly when the true
        class has the largest logit), and ``bf.Z[-1]`` becomes ``exp(z - max z)``;
        sigmoid: ``stat_a = logaddexp(0, z) - y z`` (the sample's loss), ``stat_b = z``.
        """
        Z = bf.Z[-1]
        if self.output == "softmax":
            # Shift by the row maximum (log-sum-exp): exp never overflows and the largest term is exp(0) = 1.
            np.maximum.reduce(Z, axis=1, keepdims=True, out=bf.col)
            Z -= bf.col
            tmp = bf.tmp[-1]
            np.multiply(Z, bf.Y, out=tmp)
            np.matmul(tmp, bf.ones_k, out=stat_b)
            # Floor the shifted logits (after the loss statistics were taken): exp of anything lower only
            # yields probabilities far below float resolution, and subnormal results would make every later
            # product that touches them (the backward GEMMs) many times slower.
            np.maximum(Z, self._logit_floor, out=Z)
            np.exp(Z, out=Z)
            np.matmul(Z, bf.ones_k, out=stat_a)
        else:
            z = stat_b[:, None]
            z[...] = Z
            loss = stat_a[:, None]
            # -y log s(z) - (1 - y) log(1 - s(z)) = log(1 + e^z) - y z, without overflow.
            np.logaddexp(0, Z, out=loss)
            np.multiply(Z, bf.Y, out=bf.col)
            loss -= bf.col

    def step(self, bf: Buffers, stat_a: Array, stat_b: Array) -> None:
        """Forward, loss statistics and backward for the batch in ``bf.X`` / ``bf.Y``; fills ``self.grad``.

        ``stat_a`` / ``stat_b`` (shape (m,)) receive the per-sample statistics of :meth:`output_stats`.
        """
        # forward_logits, inlined: this runs once per minibatch, and small networks are call-bound.
        A = bf.X
        W, b, Zs, tmp = self.W, self.b, bf.Z, bf.tmp
        forward = self._act_forward
        last = self.n_layers - 1
        for i in range(self.n_layers):
            Z = Zs[i]
            np.matmul(A, W[i], out=Z)
            Z += b[i]
            if i < last:
                forward(Z, tmp[i])
            A = Z
        self.output_stats(bf, stat_a, stat_b)
        dZ = A
        if self.output == "softmax":
            dZ /= stat_a[:, None]  # exp(z - max) / sum = softmax(z)
        else:
            # sigmoid(z) = (1 + tanh(z / 2)) / 2, which cannot overflow.
            dZ *= 0.5
            np.tanh(dZ, out=dZ)
            dZ *= 0.5
            dZ += 0.5
        # dZ[L] = (A[L] - Y) / m: the output nonlinearity's Jacobian cancels against d(CE)/dA.
        # (times grad_scale: backprop is linear in dZ, so every gradient below comes out scaled by it.)
        dZ -= bf.Y
        dZ *= self.grad_scale * bf.inv_m
        W_T, dW, db, AT, dAs, ones = self.WT, self.dW, self.db, bf.AT, bf.dA, bf.ones_m
        backward = self._act_backward
        for i in range(self.n_layers - 1, -1, -1):
            np.matmul(AT[i], dZ, out=dW[i])
            np.matmul(ones, dZ, out=db[i])
            if i:
                dA = dAs[i - 1]
                np.matmul(dZ, W_T[i], out=dA)
                backward(dA, Zs[i - 1], tmp[i - 1])
                dZ = dA
        if self.l2:
            np.multiply(self.theta_W, self.l2 * self.grad_scale, out=self.scratch_W)
            self.grad_W += self.scratch_W

    def epoch_loss_and_accuracy(
        self, stat_a: Array, stat_b: Array, y_idx: NDArray[np.intp] | None
    ) -> tuple[float, float]:
        """Mean cross-entropy and accuracy from the per-sample statistics of :meth:`output_stats`."""
        n = len(stat_a)
        if self.output == "softmax":
            # CE_i = -log softmax(z)_y = log sum exp(z - max) - (z_y - max).
            total = float(np.log(stat_a).sum(dtype=np.float64)) - float(stat_b.sum(dtype=np.float64))
            correct = int(np.count_nonzero(stat_b == 0))
        else:
            assert y_idx is not None
            total = float(stat_a.sum(dtype=np.float64))
            correct = int(np.count_nonzero((stat_b > 0) == (y_idx == 1)))
        return total / n, correct / n

    def penalty(self) -> float:
        """``l2 / 2 * sum ||W||^2`` for the current weights."""
        if not self.l2:
            return 0.0
        return 0.5 * self.l2 * float(np.vdot(self.theta_W, self.theta_W))
