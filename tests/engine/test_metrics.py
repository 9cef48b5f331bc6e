"""Evaluation reports, checked against scikit-learn's metrics on the same predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn import metrics as sk

from engine.metrics import calibration, evaluation_report, higher_is_better


def _case(n: int, k: int, seed: int, labels: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)) * 2
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.asarray(labels)[rng.integers(0, k, n)]
    return y, P


@pytest.mark.parametrize(
    ("classes", "seed"),
    [([0, 1], 1), ([3, 7, 9], 2), (["cat", "dog", "emu", "fox"], 3), (["a", "b", "c"], 4)],
)
def test_evaluate_matches_sklearn(classes: list[Any], seed: int) -> None:
    y, P = _case(300, len(classes), seed, classes)
    report = evaluation_report(y, P, classes)
    predicted = np.asarray(classes)[np.argmax(P, axis=1)]
    assert report["n_samples"] == 300
    assert abs(report["accuracy"] - sk.accuracy_score(y, predicted)) <= 1e-9
    assert abs(report["log_loss"] - sk.log_loss(y, P, labels=classes)) <= 1e-9
    macro = sk.f1_score(y, predicted, labels=classes, average="macro", zero_division=0)
    assert abs(report["macro_f1"] - macro) <= 1e-9
    assert report["confusion_matrix"]["labels"] == classes
    assert report["confusion_matrix"]["matrix"] == sk.confusion_matrix(y, predicted, labels=classes).tolist()
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, predicted, labels=classes, zero_division=0)
    for j, label in enumerate(classes):
        entry = report["per_class"][str(label)]
        assert entry["support"] == int(support[j])
        assert abs(entry["precision"] - precision[j]) <= 1e-9
        assert abs(entry["recall"] - recall[j]) <= 1e-9
        assert abs(entry["f1"] - f1[j]) <= 1e-9
    assert report["unknown_labels"] == []


def test_evaluate_counts_unknown_labels_as_errors() -> None:
    classes = ["a", "b", "c"]
    y, P = _case(200, 3, 5, classes)
    y = y.astype("<U8")
    y[:30] = "zebra"
    y[30:35] = "yak"
    predicted = np.asarray(classes)[np.argmax(P, axis=1)]
    report = evaluation_report(y, P, classes)
    assert report["unknown_labels"] == ["yak", "zebra"]
    assert abs(report["accuracy"] - sk.accuracy_score(y, predicted)) <= 1e-9
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 165
    assert report["confusion_matrix"]["matrix"] == sk.confusion_matrix(y, predicted, labels=classes).tolist()
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, predicted, labels=classes, zero_division=0)
    for j, label in enumerate(classes):
        entry = report["per_class"][label]
        assert entry["support"] == int(support[j])
        assert abs(entry["precision"] - precision[j]) <= 1e-9
        assert abs(entry["recall"] - recall[j]) <= 1e-9
        assert abs(entry["f1"] - f1[j]) <= 1e-9
    macro = sk.f1_score(y, predicted, labels=classes, average="macro", zero_division=0)
    assert abs(report["macro_f1"] - macro) <= 1e-9
    eps = np.finfo(np.float64).eps
    known = np.isin(y, classes)
    index = np.searchsorted(classes, y[known])
    losses = np.concatenate(
        [-np.log(np.clip(P[known], eps, 1 - eps)[np.arange(known.sum()), index]), np.full(35, -np.log(eps))]
    )
    assert abs(report["log_loss"] - losses.mean()) <= 1e-9


def test_evaluate_class_never_predicted_has_zero_precision() -> None:
    P = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0]])
    report = evaluation_report([0, 2, 1], P, [0, 1, 2])
    assert report["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_calibration_matches_manual_bins() -> None:
    y, P = _case(500, 3, 6, [0, 1, 2])
    report = evaluation_report(y, P, [0, 1, 2])["calibration"]
    top = P.max(axis=1)
    correct = np.argmax(P, axis=1) == y
    bins = report["bins"]
    assert len(bins) == 10
    assert [b["lower"] for b in bins] == pytest.approx([k / 10 for k in range(10)])
    ece = 0.0
    for k, entry in enumerate(bins):
        members = (top >= k / 10) & ((top < (k + 1) / 10) if k < 9 else (top <= 1.0))
        assert entry["count"] == int(members.sum())
        if members.any():
            assert abs(entry["confidence"] - top[members].mean()) <= 1e-9
            assert abs(entry["accuracy"] - correct[members].mean()) <= 1e-9
            ece += members.sum() / len(y) * abs(correct[members].mean() - top[members].mean())
        else:
            assert entry["confidence"] is None and entry["accuracy"] is None
    assert abs(report["ece"] - ece) <= 1e-9


def test_calibration_top_probability_one_lands_in_last_bin() -> None:
    table = calibration(np.array([1.0, 0.05]), np.array([True, False]))
    assert table["bins"][9]["count"] == 1 and table["bins"][0]["count"] == 1
    assert table["ece"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.05)


def test_evaluate_wrong_shape_raises_naming_probabilities() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        evaluation_report([0, 1], np.ones((2, 3)) / 3, [0, 1])


def test_higher_is_better_log_loss_is_lower_better() -> None:
    assert higher_is_better("accuracy") and higher_is_better("macro_f1")
    assert not higher_is_better("log_loss")
    with pytest.raises(ValueError, match="metric"):
        higher_is_better("auc")
