"""Accuracy on the real datasets bundled with scikit-learn (a test dependency)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split

from engine import TrainConfig, train


def _split_accuracy(X: np.ndarray, y: np.ndarray, split_seed: int, **config: Any) -> float:
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=split_seed)
    result = train(X_train, y_train, TrainConfig(validation_fraction=0.0, **config))
    return result.model.score(X_test, y_test)


def test_train_digits_reaches_97_percent() -> None:
    """load_digits, stratified 75/25, one hidden layer of 64 (MLPClassifier reaches 97.3% here)."""
    X, y = load_digits(return_X_y=True)
    accuracy = _split_accuracy(X, y, 0, hidden_layers=(64,), epochs=60, l2=1e-3)
    assert accuracy >= 0.97


def test_train_breast_cancer_reaches_96_percent() -> None:
    """Mean over five stratified 75/25 splits: one 143-sample test set moves in steps of 0.7%."""
    X, y = load_breast_cancer(return_X_y=True)
    scores = [_split_accuracy(X, y, split, hidden_layers=(64,), epochs=30) for split in range(5)]
    assert float(np.mean(scores)) >= 0.96, scores


def test_train_wine_reaches_95_percent() -> None:
    """Mean over five stratified 75/25 splits (45 test samples each: steps of 2.2%)."""
    X, y = load_wine(return_X_y=True)
    scores = [_split_accuracy(X, y, split, hidden_layers=(64,), activation="tanh", epochs=40) for split in range(5)]
    assert float(np.mean(scores)) >= 0.95, scores
