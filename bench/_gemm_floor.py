"""The GEMM floor: an epoch that does only the matrix products of training, into preallocated buffers.

Per mini-batch of m rows and L layers: forward `A[l] = A[l-1] @ W[l]` (L products), backward
`dW[l] = A[l-1].T @ dZ[l]` (L products) and `dZ[l-1] = dZ[l] @ W[l].T` (L-1 products), each
`np.matmul(..., out=buffer)`. No shuffle, no bias, no activation, no loss, no update: what is left is the
BLAS time any NumPy trainer of this network must spend, so an engine epoch can be compared to it.
"""

from __future__ import annotations

import itertools

import numpy as np

from bench._mlp_workloads import Workload


class GemmFloor:
    """Runs the matrix products of one training epoch; batches are contiguous row slices of X."""

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        sizes = workload.layer_sizes
        m = workload.batch_size
        dtype = workload.X.dtype
        self.X = workload.X
        self.batch_size = m
        self.W = [
            (rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in)).astype(dtype)
            for n_in, n_out in itertools.pairwise(sizes)
        ]
        self.dW = [np.empty_like(W) for W in self.W]
        # A[l] and dZ[l] for l = 1..L (index 0 is the input / unused).
        self.A = [np.empty((0, 0), dtype)] + [rng.random((m, n), dtype=dtype) for n in sizes[1:]]
        self.dZ = [np.empty((0, 0), dtype)] + [
            rng.standard_normal((m, n)).astype(dtype) * dtype.type(1e-2) for n in sizes[1:]
        ]

    def run_epoch(self) -> None:
        X, W, dW, A, dZ = self.X, self.W, self.dW, self.A, self.dZ
        n_layers = len(W)
        for start in range(0, X.shape[0], self.batch_size):
            batch = X[start : start + self.batch_size]
            m = batch.shape[0]
            previous = batch
            for layer in range(1, n_layers + 1):
                np.matmul(previous, W[layer - 1], out=A[layer][:m])
                previous = A[layer][:m]
            for layer in range(n_layers, 0, -1):
                inputs = batch if layer == 1 else A[layer - 1][:m]
                np.matmul(inputs.T, dZ[layer][:m], out=dW[layer - 1])
                if layer > 1:
                    np.matmul(dZ[layer][:m], W[layer - 1].T, out=dZ[layer - 1][:m])
