"""A lean NumPy trainer for the benchmark's relu/softmax MLPs: the prototype the engine's fused step is
measured against, to show what each suggested change in docs/benchmarks.md is worth.

Everything is preallocated: the parameters (and their gradients) are views into one flat vector, so an
optimizer update is a few NumPy calls for the whole network; the batch is gathered into a fixed buffer with
`np.take(..., out=)`; the forward pass overwrites Z with A in place; the learning rate and 1/m are folded
into dZ[L] (an (m, k) array) so that the GEMMs produce lr-scaled gradients directly and momentum costs three
passes over the parameters (u = mu u + lr g; theta -= u, PyTorch's form of momentum). Training loss and
accuracy are accumulated from the batches with two small calls per batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench._mlp_workloads import N_CLASSES, Workload

Array = NDArray[Any]


class LeanMLP:
    """relu hidden layers, softmax output, momentum or adam; one `run_epoch()` = one shuffled pass."""

    def __init__(self, workload: Workload, seed: int = 0, bias_in_gemm: bool = False) -> None:
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
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.theta = np.empty(n_params, dtype)
        self.grad = np.empty(n_params, dtype)
        self.W: list[Array] = []
        self.b: list[Array] = []
        self.dW: list[Array] = []
        self.db: list[Array] = []
        offset = 0
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            W = self.theta[offset : offset + n_in * n_out].reshape(n_in, n_out)
            self.dW.append(self.grad[offset : offset + n_in * n_out].reshape(n_in, n_out))
            offset += n_in * n_out
            W[...] = rng.standard_normal((n_in, n_out)) * math.sqrt(2 / n_in if layer < len(sizes) - 2 else
                                                                   1 / n_in)
            self.W.append(W)
        for n_out in sizes[1:]:
            b = self.theta[offset : offset + n_out]
            b[...] = 0
            self.b.append(b)
            self.db.append(self.grad[offset : offset + n_out])
            offset += n_out
        self.Xb = np.empty((m, sizes[0]), dtype)
        self.A = [self.Xb] + [np.empty((m, n), dtype) for n in sizes[1:]]
        self.dZ = [np.empty((0, 0), dtype)] + [np.empty((m, n), dtype) for n in sizes[1:]]
        self.mask = [np.empty((0, 0), bool)] + [np.empty((m, n), bool) for n in sizes[1:]]
        self.one_hot = np.eye(N_CLASSES, dtype=dtype)
        self.Yb = np.empty((m, N_CLASSES), dtype)
        self.row = np.empty((m, 1), dtype)
        self.ones = np.ones((1, m), dtype)
        self.picked = np.empty(self.X.shape[0], dtype)
        self.predicted = np.empty(self.X.shape[0], np.intp)
        self.state = [np.zeros_like(self.theta) for _ in range(2 if self.optimizer == "adam" else 1)]
        self.scratch = np.empty_like(self.theta)
        self.t = 0
        self.train_loss = math.nan
        self.train_accuracy = math.nan

    def run_epoch(self) -> None:
        n, m_full = self.X.shape[0], self.batch_size
        order = self.rng.permutation(n)
        X, y, W, b, dW, db, A, dZ, mask = self.X, self.y, self.W, self.b, self.dW, self.db, self.A, self.dZ, self.mask
        L = len(W)
        adam = self.optimizer == "adam"
        lr = self.learning_rate
        for start in range(0, n, m_full):
            index = order[start : start + m_full]
            m = index.shape[0]
            if m == m_full:
                Xb, Yb = self.Xb, self.Yb
            else:
                Xb, Yb = self.Xb[:m], self.Yb[:m]
            np.take(X, index, axis=0, out=Xb, mode="clip")
            yb = y[index]
            np.take(self.one_hot, yb, axis=0, out=Yb, mode="clip")
            previous = Xb
            for l in range(L):
                Z = A[l + 1][:m]
                np.matmul(previous, W[l], out=Z)
                Z += b[l]
                if l < L - 1:
                    np.maximum(Z, 0, out=Z)
                previous = Z
            # softmax in place (max-shifted), then dZ[L] = (P - Y) * scale
            P = previous
            row = self.row[:m]
            np.max(P, axis=1, keepdims=True, out=row)
            P -= row
            np.exp(P, out=P)
            np.sum(P, axis=1, keepdims=True, out=row)
            P /= row
            # metrics: probability of the true class and the prediction, reduced once per epoch
            np.sum(P * Yb, axis=1, out=self.picked[start : start + m])
            np.argmax(P, axis=1, out=self.predicted[start : start + m])
            dZL = dZ[L][:m]
            np.subtract(P, Yb, out=dZL)
            # Adam is scale-sensitive only through epsilon: keep the true gradient there.
            dZL *= (1.0 / m) if adam else (lr / m)
            for l in range(L - 1, -1, -1):
                upstream = dZ[l + 1][:m]
                np.matmul(A[l][:m].T, upstream, out=dW[l])
                np.matmul(self.ones[:, :m], upstream, out=db[l].reshape(1, -1))
                if l > 0:
                    below = dZ[l][:m]
                    np.matmul(upstream, W[l].T, out=below)
                    np.greater(A[l][:m], 0, out=mask[l][:m])
                    below *= mask[l][:m]
            if adam:
                self._adam()
            else:
                u = self.state[0]
                u *= self.momentum
                u += self.grad
                self.theta -= u
        np.log(self.picked, out=self.picked)
        self.train_loss = -float(self.picked.mean(dtype=np.float64))
        self.train_accuracy = float(np.mean(self.predicted == y[order]))

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
