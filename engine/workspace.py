"""The trainer's fused minibatch step: the arithmetic of :func:`engine.backprop`, with no allocation.

All weights and biases live in one flat vector ``theta`` (weights of every layer first, then every bias),
and ``W[l]``, ``b[l]`` are views into it; the gradient has the same layout. So an optimizer update is a few
NumPy calls for the whole network, and the matrix products write straight into the gradient's views.

Per batch size the workspace keeps one set of buffers; activations overwrite their pre-activations in
place (the derivatives are taken from ``A``, see ``engine.activations``), and the output layer is held
transposed, (k, m), so that the softmax reduces across rows (see :class:`Buffers`). Shortcuts against the
reference implementation, all exact in real arithmetic:

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
    """Preallocated arrays for batches of ``m`` rows.

    The output layer is kept transposed, as (k, m): its logits are ``W.T @ A.T`` straight out of the GEMM,
    and the softmax then reduces over axis 0, i.e. across k contiguous rows of length m, which NumPy does
    several times faster than over the k-element rows of an (m, k) array.
    """

    def __init__(self, m: int, sizes: list[int], dtype: np.dtype[Any]) -> None:
        k = sizes[-1]
        self.m = m
        self.inv_m = 1.0 / m
        self.X = np.empty((m, sizes[0]), dtype=dtype)
        self.YT = np.empty((k, m), dtype=dtype)
        self.Y = self.YT.T  # (m, k) view
        # Z[l] holds layer l+1's pre-activation, then (hidden layers) its activation A, overwritten in place.
        self.Z = [np.empty((m, n), dtype=dtype) for n in sizes[1:-1]]
        self.ZT = np.empty((k, m), dtype=dtype)  # output logits, transposed
        self.AT = [self.X.T] + [Z.T for Z in self.Z]
        self.dA = [np.empty((m, n), dtype=dtype) for n in sizes[1:-1]]
        self.tmp = [np.empty((m, n), dtype=dtype) for n in sizes[1:-1]]
        self.tmpT = np.empty((k, m), dtype=dtype)
        self.row = np.empty((1, m), dtype=dtype)
        # Column sums as ones @ dZ and row sums as Z @ ones: BLAS matrix-vector products, which cost less
        # per call than NumPy's reductions on these small arrays.
        self.ones_m = np.ones(m, dtype=dtype)
        self.ones_k = np.ones(k, dtype=dtype)

    @staticmethod
    def n_elements(m: int, sizes: list[int]) -> int:
        """Elements the buffers for ``m`` rows hold: X, three per hidden unit (Z, dA, tmp), three per output
        unit (YT, ZT, tmpT), ``row`` and ``ones_m``, and ``ones_k``."""
        hidden = sum(sizes[1:-1])
        k = sizes[-1]
        return m * (sizes[0] + 3 * hidden + 3 * k + 2) + k


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
        self.b_out = self.b[-1][:, None]  # output bias as a column, for the (k, m) logits
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
        """Hidden layers and output logits for ``bf.X``; returns ``bf.ZT``, the logits as (k, m)."""
        A = bf.X
        W, b, Zs, tmp = self.W, self.b, bf.Z, bf.tmp
        forward = self._act_forward
        for i in range(self.n_layers - 1):
            Z = Zs[i]
            np.matmul(A, W[i], out=Z)
            Z += b[i]
            forward(Z, tmp[i])
            A = Z
        np.matmul(self.WT[-1], A.T, out=bf.ZT)
        bf.ZT += self.b_out
        return bf.ZT

    def output_stats(self, bf: Buffers, stat_a: Array, stat_b: Array) -> None:
        """Per-sample numbers the loss and accuracy are made of; leaves ``bf.ZT`` ready for the step.

        softmax: ``stat_a = sum_j exp(z_j - max z)``, ``stat_b = z_y - max z`` (0 exactly when the true
        class has the largest logit), and ``bf.ZT`` becomes ``exp(z - max z)``;
        sigmoid: ``stat_a = logaddexp(0, z) - y z`` (the sample's loss), ``stat_b = z``.
        """
        ZT = bf.ZT
        if self.output == "softmax":
            # Shift by each sample's maximum logit (log-sum-exp): exp cannot overflow, the largest term is 1.
            np.maximum.reduce(ZT, axis=0, keepdims=True, out=bf.row)
            ZT -= bf.row
            np.multiply(ZT, bf.YT, out=bf.tmpT)
            np.matmul(bf.ones_k, bf.tmpT, out=stat_b)
            # Floor the shifted logits (after the loss statistics were taken): exp of anything lower only
            # yields probabilities far below float resolution, and subnormal results would make every later
            # product that touches them (the backward GEMMs) many times slower.
            np.maximum(ZT, self._logit_floor, out=ZT)
            np.exp(ZT, out=ZT)
            np.matmul(bf.ones_k, ZT, out=stat_a)
        else:
            stat_b[...] = ZT[0]
            loss = stat_a[None, :]
            # -y log s(z) - (1 - y) log(1 - s(z)) = log(1 + e^z) - y z, without overflow.
            np.logaddexp(0, ZT, out=loss)
            np.multiply(ZT, bf.YT, out=bf.row)
            loss -= bf.row

    def step(self, bf: Buffers, stat_a: Array, stat_b: Array) -> None:
        """Forward, loss statistics and backward for the batch in ``bf.X`` / ``bf.Y``; fills ``self.grad``.

        ``stat_a`` / ``stat_b`` (shape (m,)) receive the per-sample statistics of :meth:`output_stats`.
        """
        # forward_logits, inlined: this runs once per minibatch, and small networks are call-bound.
        A = bf.X
        W, b, Zs, tmp = self.W, self.b, bf.Z, bf.tmp
        forward = self._act_forward
        for i in range(self.n_layers - 1):
            Z = Zs[i]
            np.matmul(A, W[i], out=Z)
            Z += b[i]
            forward(Z, tmp[i])
            A = Z
        dZT = bf.ZT
        np.matmul(self.WT[-1], A.T, out=dZT)
        dZT += self.b_out
        self.output_stats(bf, stat_a, stat_b)
        if self.output == "softmax":
            dZT /= stat_a  # exp(z - max) / sum = softmax(z), column by column
        else:
            # sigmoid(z) = (1 + tanh(z / 2)) / 2, which cannot overflow.
            dZT *= 0.5
            np.tanh(dZT, out=dZT)
            dZT *= 0.5
            dZT += 0.5
        # dZ[L] = (A[L] - Y) / m: the output nonlinearity's Jacobian cancels against d(CE)/dA.
        # (times grad_scale: backprop is linear in dZ, so every gradient below comes out scaled by it.)
        dZT -= bf.YT
        dZT *= self.grad_scale * bf.inv_m
        W_T, dW, db, AT, dAs, ones = self.WT, self.dW, self.db, bf.AT, bf.dA, bf.ones_m
        backward = self._act_backward
        last = self.n_layers - 1
        np.matmul(AT[last], dZT.T, out=dW[last])
        np.matmul(dZT, ones, out=db[last])
        dZ = dZT.T
        for i in range(last, 0, -1):
            dA = dAs[i - 1]
            np.matmul(dZ, W_T[i], out=dA)
            backward(dA, Zs[i - 1], tmp[i - 1])
            dZ = dA
            np.matmul(AT[i - 1], dZ, out=dW[i - 1])
            np.matmul(ones, dZ, out=db[i - 1])
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
