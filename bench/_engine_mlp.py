"""The engine as a benchmark contender: `engine.Training` on preset data, exactly one epoch per call."""

from __future__ import annotations

from typing import Any

import engine
from bench._mlp_workloads import Workload


def bench_config(workload: Workload, epochs: int, **overrides: Any) -> Any:
    """The TrainConfig that matches the other contenders: no validation split, no standardisation (the
    data is already in [0, 1]), no L2 penalty (PyTorch and scikit-learn run without one here), float32."""
    settings: dict[str, Any] = {
        "hidden_layers": workload.hidden_layers,
        "activation": "relu",
        "output": "softmax",
        "epochs": epochs,
        "batch_size": workload.batch_size,
        "optimizer": workload.optimizer,
        "learning_rate": workload.learning_rate,
        "momentum": workload.momentum,
        "l2": 0.0,
        "validation_fraction": 0.0,
        "early_stopping": False,
        "seed": 0,
        "dtype": "float32",
        "standardize": False,
    }
    settings.update(overrides)
    return engine.TrainConfig(**settings)


class EngineMLP:
    """`engine.Training(X, y, config).run_epoch()`; metrics come from the engine's own EpochMetrics."""

    def __init__(self, workload: Workload, epochs: int) -> None:
        self.training = engine.Training(workload.X, workload.y, bench_config(workload, epochs))
        self.metrics: Any = None

    def run_epoch(self) -> None:
        self.metrics = self.training.run_epoch()

    def evaluate(self) -> tuple[float, float]:
        """(train loss, train accuracy) as the engine reported them for its last epoch."""
        if self.metrics is None:
            return float("nan"), float("nan")
        return float(self.metrics.train_loss), float(self.metrics.train_accuracy)
