"""The PyTorch (CPU) contender: the same MLP with a hand-written loop (no DataLoader), idiomatic and fast."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from bench._mlp_workloads import Workload


class TorchMLP:
    """`nn.Sequential` of Linear/ReLU, `CrossEntropyLoss`, SGD(momentum) or Adam(fused=True)."""

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        torch.manual_seed(seed)
        sizes = workload.layer_sizes
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.model = nn.Sequential(*layers[:-1])
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer: torch.optim.Optimizer
        if workload.optimizer == "momentum":
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=workload.learning_rate, momentum=workload.momentum
            )
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=workload.learning_rate, fused=True)
        # Shares memory with the NumPy arrays: no copy of the data set.
        self.X = torch.from_numpy(workload.X)
        self.y = torch.from_numpy(workload.y)
        self.batch_size = workload.batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def run_epoch(self) -> None:
        """One shuffled pass over the data: forward, loss, backward, optimizer step per mini-batch."""
        n = self.X.shape[0]
        order = torch.randperm(n, generator=self.generator)
        model, loss_fn, optimizer = self.model, self.loss_fn, self.optimizer
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(self.X[index]), self.y[index])
            loss.backward()
            optimizer.step()

    def evaluate(self) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on the training data, not timed."""
        with torch.no_grad():
            logits = self.model(self.X)
            loss = float(self.loss_fn(logits, self.y))
            accuracy = float((logits.argmax(dim=1) == self.y).float().mean())
        return loss, accuracy


def torch_threads() -> int:
    """Threads PyTorch's intra-op pool uses."""
    return int(torch.get_num_threads())


def set_torch_threads(n_threads: int) -> None:
    """Give PyTorch the same number of threads as NumPy's BLAS."""
    torch.set_num_threads(n_threads)


def torch_version() -> str:
    return str(torch.__version__)


def torch_blas() -> str:
    """PyTorch's own BLAS/CPU-capability line from its build config (MKL on the x86 CPU wheels)."""
    config = torch.__config__.show()
    blas = "MKL" if "BLAS_INFO=mkl" in config else "other BLAS"
    capability = next(
        (line.split(":", 1)[1].strip() for line in config.splitlines() if "CPU capability usage" in line),
        "unknown",
    )
    return f"{blas}, CPU capability {capability}"


__all__ = ["TorchMLP", "set_torch_threads", "torch_blas", "torch_threads", "torch_version"]
