"""A lean NumPy trainer for the benchmark's relu/softmax MLPs: a prototype of the changes suggested for the
engine's fused step, measured beside it (it is not the engine and is not used by it).

Like the engine: parameters and gradients are views into one flat vector, batches are gathered into fixed
buffers with `np.take(..., out=)`, activations overwrite pre-activations, and per-sample loss statistics are
reduced once per epoch. Unlike it (each measured in docs/benchmarks.md):

* relu is `np.maximum(Z, zeros)` against a preallocated zero array, not the scalar 0 (5x faster in NumPy);
* the output layer is computed transposed, (k, m), so the softmax's max and sums reduce over axis 0;
* bias gradients are `ones @ dZ` (BLAS gemv) instead of `dZ.sum(axis=0)`;
* for momentum, lr/m is folded into dZ[L]: the GEMMs give lr-scaled gradients, and the update is three
  passes (u = mu u + lr g; theta -= u, PyTorch's form of momentum) instead of four.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench._mlp_workloads import Workload

Array = NDArray[Any]


class LeanMLP:
    """relu hidden layers, softmax output, momentum or adam; one `run_epoch()` = one shuffled pass."""

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.X = workload.X
        self.y = workload.y
        dtype = workload.X.dtype
        sizes = workload.layer_sizes
        self.sizes = sizes
        self.optimizer = workload.optimizer
        self.learning_rate = workload.learning_rate
        self.momentum = workload.momentum
        m = self.batch_size = workload.batch_size
        n_params = sum(a * b + b for a, b in itertools.pairwise(sizes))
        self.theta = np.empty(n_params, dtype)
        self.grad = np.empty(n_params, dtype)
        self.W: list[Array] = []
        self.b: list[Array] = []
        self.dW: list[Array] = []
        self.db: list[Array] = []
        offset = 0
        for layer, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            W = self.theta[offset : offset + n_in * n_out].reshape(n_in, n_out)
            self.dW.append(self.grad[offset : offset + n_in * n_out].reshape(n_in, n_out))
            offset += n_in * n_out
            W[...] = rng.standard_normal((n_in, n_out)) * math.sqrt(2 / n_in if layer < len(sizes) - 2 else 1 / n_in)
            self.W.append(W)
        for n_out in sizes[1:]:
            b = self.theta[offset : offset + n_out]
            b[...] = 0
            self.b.append(b)
            self.db.append(self.grad[offset : offset + n_out])
            offset += n_out
        k = sizes[-1]
        self.Xb = np.empty((m, sizes[0]), dtype)
        # Hidden activations (m, n); the output layer is kept transposed, (k, m), so that the softmax's
        # per-sample max and sums are reductions over axis 0 (vectorised across samples) rather than
        # k-element row reductions, which NumPy does one row at a time.
        self.A = [self.Xb] + [np.empty((m, n), dtype) for n in sizes[1:-1]]
        self.ZT = np.empty((k, m), dtype)
        self.dZ = [np.empty((0, 0), dtype)] + [np.empty((m, n), dtype) for n in sizes[1:-1]]
        self.mask = [np.empty((0, 0), bool)] + [np.empty((m, n), bool) for n in sizes[1:-1]]
        self.zeros = [np.empty((0, 0), dtype)] + [np.zeros((m, n), dtype) for n in sizes[1:-1]]
        self.tmpT = np.empty((k, m), dtype)
        self.YT = np.ascontiguousarray(np.eye(k, dtype=dtype)[:, self.y])  # (k, n) one-hot columns
        self.YbT = np.empty((k, m), dtype)
        self.ones = np.ones(m, dtype)
        self.stat_a = np.empty(self.X.shape[0], dtype)  # sum_j exp(z_j - max z) per sample
        self.stat_b = np.empty(self.X.shape[0], dtype)  # z_y - max z per sample (0 when correct)
        self.state = [np.zeros_like(self.theta) for _ in range(2 if self.optimizer == "adam" else 1)]
        self.scratch = np.empty_like(self.theta)
        self.t = 0
        self.train_loss = math.nan
        self.train_accuracy = math.nan

    def run_epoch(self) -> None:
        n, m_full = self.X.shape[0], self.batch_size
        order = self.rng.permutation(n)
        X, W, b, dW, db, A, dZ, mask = self.X, self.W, self.b, self.dW, self.db, self.A, self.dZ, self.mask
        zeros, YT = self.zeros, self.YT
        L = len(W)
        WLT = W[-1].T
        adam = self.optimizer == "adam"
        lr = self.learning_rate
        take, matmul, add_reduce, max_reduce = np.take, np.matmul, np.add.reduce, np.maximum.reduce
        for start in range(0, n, m_full):
            index = order[start : start + m_full]
            m = index.shape[0]
            full = m == m_full
            Xb = self.Xb if full else self.Xb[:m]
            YbT = self.YbT if full else self.YbT[:, :m]
            ZT = self.ZT if full else self.ZT[:, :m]
            tmpT = self.tmpT if full else self.tmpT[:, :m]
            ones = self.ones if full else self.ones[:m]
            take(X, index, axis=0, out=Xb, mode="clip")
            take(YT, index, axis=1, out=YbT, mode="clip")
            previous = Xb
            for layer in range(L - 1):
                Z = A[layer + 1] if full else A[layer + 1][:m]
                matmul(previous, W[layer], out=Z)
                Z += b[layer]
                # maximum against a zero array: NumPy's scalar-operand path is ~5x slower here
                np.maximum(Z, zeros[layer + 1] if full else zeros[layer + 1][:m], out=Z)
                previous = Z
            matmul(WLT, previous.T, out=ZT)
            ZT += b[-1][:, None]
            stat_a = self.stat_a[start : start + m]
            stat_b = self.stat_b[start : start + m]
            max_reduce(ZT, axis=0, out=stat_b)
            ZT -= stat_b
            np.multiply(ZT, YbT, out=tmpT)
            add_reduce(tmpT, axis=0, out=stat_b)
            np.exp(ZT, out=ZT)
            add_reduce(ZT, axis=0, out=stat_a)
            ZT /= stat_a
            ZT -= YbT
            # Adam is scale-sensitive only through epsilon: keep the true gradient there.
            ZT *= (1.0 / m) if adam else (lr / m)
            upstream = ZT.T
            for layer in range(L - 1, -1, -1):
                inputs = Xb if layer == 0 else (A[layer] if full else A[layer][:m])
                matmul(inputs.T, upstream, out=dW[layer])
                if layer == L - 1:
                    matmul(ZT, ones, out=db[layer])
                else:
                    matmul(ones, upstream, out=db[layer])
                if layer > 0:
                    below = dZ[layer] if full else dZ[layer][:m]
                    matmul(upstream, W[layer].T, out=below)
                    mk = mask[layer] if full else mask[layer][:m]
                    np.greater(inputs, 0, out=mk)
                    np.multiply(below, mk, out=below)
                    upstream = below
            if adam:
                self._adam()
            else:
                u = self.state[0]
                u *= self.momentum
                u += self.grad
                self.theta -= u
        log_sum = float(np.log(self.stat_a).sum(dtype=np.float64))
        self.train_loss = (log_sum - float(self.stat_b.sum(dtype=np.float64))) / n
        self.train_accuracy = float(np.count_nonzero(self.stat_b == 0)) / n

    def _adam(self, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8) -> None:
        self.t += 1
        g, (m1, m2), s = self.grad, self.state, self.scratch
        # m <- b1 m + (1 - b1) g  as  m = b1 (m - g) + g: three passes, no scratch
        m1 -= g
        m1 *= beta1
        m1 += g
        np.multiply(g, g, out=s)
        m2 -= s
        m2 *= beta2
        m2 += s
        c1 = 1 - beta1**self.t
        sqrt_c2 = math.sqrt(1 - beta2**self.t)
        np.sqrt(m2, out=s)
        s += epsilon * sqrt_c2
        np.divide(m1, s, out=s)
        s *= self.learning_rate * sqrt_c2 / c1
        self.theta -= s

    def evaluate(self) -> tuple[float, float]:
        return self.train_loss, self.train_accuracy
