"""The scikit-learn contender: `MLPClassifier.partial_fit`, one call per epoch, float32 input."""

from __future__ import annotations

import warnings

import numpy as np
import sklearn
from sklearn.neural_network import MLPClassifier

from bench._mlp_workloads import N_CLASSES, Workload


class SklearnMLP:
    """`partial_fit` runs exactly one shuffled epoch of mini-batch sgd (momentum) or adam."""

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        solver = "sgd" if workload.optimizer == "momentum" else "adam"
        self.model = MLPClassifier(
            hidden_layer_sizes=workload.hidden_layers,
            activation="relu",
            solver=solver,
            alpha=0.0,
            batch_size=workload.batch_size,
            learning_rate_init=workload.learning_rate,
            momentum=workload.momentum,
            nesterovs_momentum=False,
            shuffle=True,
            random_state=seed,
        )
        self.X = workload.X
        self.y = workload.y
        self.classes = np.arange(N_CLASSES)

    def run_epoch(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.partial_fit(self.X, self.y, classes=self.classes)

    def evaluate(self) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on the training data, not timed."""
        proba = self.model.predict_proba(self.X)
        picked = proba[np.arange(len(self.y)), self.y]
        loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
        return loss, float((proba.argmax(axis=1) == self.y).mean())


def sklearn_version() -> str:
    return str(sklearn.__version__)
