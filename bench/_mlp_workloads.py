"""The engine benchmark's workloads: data, layer sizes and optimizer settings shared by all contenders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIG_SAMPLES = 60_000
QUICK_BIG_SAMPLES = 6_000
N_CLASSES = 10


@dataclass(frozen=True)
class Workload:
    """One benchmark case: the same X, y, network and optimizer for every contender."""

    name: str
    X: np.ndarray  # (n_samples, n_features) float32, C-contiguous
    y: np.ndarray  # (n_samples,) int64 labels in [0, n_classes)
    hidden_layers: tuple[int, ...]
    batch_size: int
    optimizer: str  # "momentum" or "adam"
    learning_rate: float
    momentum: float = 0.9

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def layer_sizes(self) -> list[int]:
        return [int(self.X.shape[1]), *self.hidden_layers, N_CLASSES]

    def with_optimizer(self, optimizer: str) -> Workload:
        learning_rate = 0.05 if optimizer == "momentum" else 1e-3
        name = self.name.split("/")[0] + "/" + optimizer
        return Workload(name, self.X, self.y, self.hidden_layers, self.batch_size, optimizer, learning_rate)


def mnist_like(n_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic MNIST-shaped data: 28x28 uint8-like pixels scaled to [0, 1], 10 classes.

    About 20% of the pixels are lit (as in MNIST), and the labels come from a random linear teacher with a
    little noise, so that there is signal to learn and the training loss falls the way it does on real data.

    Returns
    -------
    X : (n_samples, 784) float32
    y : (n_samples,) int64
    """
    rng = np.random.default_rng(seed)
    n_features = 28 * 28
    X = np.empty((n_samples, n_features), dtype=np.float32)
    chunk = 4096
    teacher = rng.standard_normal((n_features, N_CLASSES)).astype(np.float32)
    y = np.empty(n_samples, dtype=np.int64)
    for start in range(0, n_samples, chunk):
        stop = min(start + chunk, n_samples)
        pixels = rng.integers(0, 256, size=(stop - start, n_features), dtype=np.uint8)
        lit = rng.random((stop - start, n_features)) < 0.2
        block = X[start:stop]
        np.multiply(pixels, lit, out=block, casting="unsafe")
        block *= np.float32(1 / 255)
        logits = (block - block.mean(axis=1, keepdims=True)) @ teacher
        logits += rng.standard_normal(logits.shape).astype(np.float32)
        y[start:stop] = logits.argmax(axis=1)
    return X, y


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1,797 x 64), pixels scaled from 0..16 to [0, 1], as float32."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = np.ascontiguousarray(data.data, dtype=np.float32) / np.float32(16)
    return X, data.target.astype(np.int64)


def big_workload(optimizer: str, n_samples: int = BIG_SAMPLES) -> Workload:
    """784-256-128-10 relu, batch 128, on `n_samples` synthetic MNIST-shaped samples."""
    X, y = mnist_like(n_samples)
    return Workload("big", X, y, (256, 128), 128, "momentum", 0.05).with_optimizer(optimizer)


def small_workload(optimizer: str) -> Workload:
    """64-32-10 relu, batch 32, on the digits data set."""
    X, y = digits()
    return Workload("small", X, y, (32,), 32, "momentum", 0.05).with_optimizer(optimizer)
