"""Evaluation of a classifier's probabilities against true labels: accuracy, log loss, macro F1, the
confusion matrix, per-class precision/recall/F1 and calibration (expected calibration error).

Pure NumPy. Labels the model never saw count as errors everywhere they can: they are wrong predictions for
accuracy, get probability 0 (clipped) in the log loss, and are false positives of whatever class was
predicted; they have no row in the confusion matrix (its rows are the model's classes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.data import Label, check_labels

Array = NDArray[Any]

CALIBRATION_BINS = 10
METRICS = ("accuracy", "log_loss", "macro_f1")
"""The metrics a comparison may use; `log_loss` is better when lower, the others when higher."""

_EPS = float(np.finfo(np.float64).eps)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` (one of `METRICS`) is better.

    Parameters
    ----------
    metric : str
        ``"accuracy"``, ``"log_loss"`` or ``"macro_f1"``.

    Returns
    -------
    bool
        False for ``log_loss``, True otherwise.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return metric != "log_loss"


def _python(label: Any) -> Label:
    """A NumPy scalar label as a plain int or str."""
    value = label.item() if isinstance(label, np.generic) else label
    return value if isinstance(value, str) else int(value)


def label_indices(y: object, classes: list[Label]) -> tuple[NDArray[np.int64], list[Label]]:
    """Column index of each label in `classes`, -1 for a label the model never saw.

    Parameters
    ----------
    y : array-like, shape (n_samples,)
        True labels (ints or strings), normalised as training normalises them (``check_labels``).
    classes : list of int or str
        The model's classes; probability column ``j`` is ``classes[j]``.

    Returns
    -------
    indices : ndarray of int64, shape (n_samples,)
        ``classes.index(y[i])`` or -1.
    unknown : list of int or str
        The distinct labels of `y` not in `classes`, sorted.
    """
    raw = np.asarray(y)
    if raw.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {raw.shape}")
    labels = check_labels(raw, raw.shape[0], "y")  # the same normalisation as training's labels
    position = {_python(label): index for index, label in enumerate(classes)}
    distinct, inverse = np.unique(labels, return_inverse=True)
    lookup = np.array([position.get(_python(label), -1) for label in distinct], dtype=np.int64)
    indices = lookup[inverse.reshape(-1)] if len(distinct) else np.empty(0, dtype=np.int64)
    unknown = sorted((_python(label) for label, index in zip(distinct, lookup, strict=True) if index < 0), key=str)
    return indices, unknown


def confusion_matrix(true: NDArray[np.int64], predicted: NDArray[np.int64], n_classes: int) -> Array:
    """Counts of (true class, predicted class) pairs; samples with a true index of -1 are left out.

    Parameters
    ----------
    true, predicted : ndarray of int64, shape (n_samples,)
        Class indices (``true`` may hold -1 for unknown labels).
    n_classes : int
        Number of classes.

    Returns
    -------
    ndarray of int64, shape (n_classes, n_classes)
        Rows are true classes, columns predicted classes.
    """
    known = true >= 0
    flat = true[known] * n_classes + predicted[known]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(np.int64)


def _ratio(numerator: Array, denominator: Array) -> Array:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _per_class(true: NDArray[np.int64], predicted: NDArray[np.int64], n_classes: int) -> dict[str, Array]:
    """Precision, recall, F1 and support of every class (unknown labels are false positives only)."""
    correct = predicted == true
    true_positive = np.bincount(predicted[correct], minlength=n_classes).astype(np.float64)
    predicted_count = np.bincount(predicted, minlength=n_classes).astype(np.float64)
    support = np.bincount(true[true >= 0], minlength=n_classes).astype(np.int64)
    precision = _ratio(true_positive, predicted_count)
    recall = _ratio(true_positive, support.astype(np.float64))
    # F1 as 2 TP / (2 TP + FP + FN): equal to the harmonic mean of precision and recall, and 0 (not NaN)
    # when a class is neither predicted nor present, as scikit-learn reports it.
    f1 = _ratio(2.0 * true_positive, predicted_count + support)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def calibration(top: NDArray[np.float64], correct: NDArray[np.bool_], bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Reliability of the top probability: equal-width bins over [0, 1] and the expected calibration error.

    Parameters
    ----------
    top : ndarray of float64, shape (n_samples,)
        The largest probability of each row (the predicted class's).
    correct : ndarray of bool, shape (n_samples,)
        Whether each prediction was right.
    bins : int
        Number of bins; bin ``k`` holds ``k / bins <= top < (k + 1) / bins`` (the last one includes 1).

    Returns
    -------
    dict
        ``ece`` (sum over bins of ``count / n * |accuracy - confidence|``) and ``bins``: per bin
        ``lower``, ``upper``, ``count``, ``confidence`` (mean top probability) and ``accuracy``; the last two
        are None for an empty bin.
    """
    index = np.minimum((top * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    confidence_sum = np.bincount(index, weights=top, minlength=bins)
    correct_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    confidence = _ratio(confidence_sum, counts.astype(np.float64))
    accuracy = _ratio(correct_sum, counts.astype(np.float64))
    n = max(int(top.shape[0]), 1)
    ece = float(np.sum(counts / n * np.abs(accuracy - confidence)))
    table = [
        {
            "lower": k / bins,
            "upper": (k + 1) / bins,
            "count": int(counts[k]),
            "confidence": float(confidence[k]) if counts[k] else None,
            "accuracy": float(accuracy[k]) if counts[k] else None,
        }
        for k in range(bins)
    ]
    return {"ece": ece, "bins": table}


def evaluation_report(y: object, probabilities: object, classes: list[Label]) -> dict[str, Any]:
    """The evaluation report of a classifier's probabilities against true labels.

    Parameters
    ----------
    y : array-like, shape (n_samples,)
        True labels (ints or strings); labels not in `classes` count as errors.
    probabilities : array-like, shape (n_samples, n_classes)
        Rows of class probabilities, column ``j`` for ``classes[j]``.
    classes : list of int or str
        The model's classes, in its order.

    Returns
    -------
    dict
        JSON-safe: ``n_samples``, ``accuracy``, ``log_loss`` (mean of ``-log p_true``, ``p`` clipped to
        ``[eps, 1 - eps]`` as scikit-learn does), ``macro_f1`` (unweighted mean over
        `classes`), ``confusion_matrix`` ``{"labels", "matrix"}``, ``per_class``
        ``{str(label): {"precision", "recall", "f1", "support"}}``, ``calibration`` (see
        :func:`calibration`) and ``unknown_labels``.
    """
    P = np.asarray(probabilities, dtype=np.float64)
    n_classes = len(classes)
    if P.ndim != 2 or P.shape[1] != n_classes:
        raise ValueError(f"probabilities must have shape (n_samples, {n_classes}), got {P.shape}")
    true, unknown = label_indices(y, classes)
    if true.shape[0] != P.shape[0] or P.shape[0] == 0:
        raise ValueError(f"y has {true.shape[0]} labels for {P.shape[0]} rows of probabilities (need >= 1)")
    predicted = np.argmax(P, axis=1).astype(np.int64)
    correct = predicted == true
    # Clipped so a confident wrong answer costs -log(eps) ~ 36 instead of infinity (scikit-learn's rule).
    clipped = np.clip(P, _EPS, 1.0 - _EPS)
    p_true = np.where(true >= 0, clipped[np.arange(P.shape[0]), np.maximum(true, 0)], _EPS)
    per_class = _per_class(true, predicted, n_classes)
    matrix = confusion_matrix(true, predicted, n_classes)
    return {
        "n_samples": int(P.shape[0]),
        "accuracy": float(np.mean(correct)),
        "log_loss": float(-np.mean(np.log(p_true))),
        "macro_f1": float(np.mean(per_class["f1"])),
        "confusion_matrix": {"labels": list(classes), "matrix": matrix.tolist()},
        "per_class": {
            str(label): {
                "precision": float(per_class["precision"][j]),
                "recall": float(per_class["recall"][j]),
                "f1": float(per_class["f1"][j]),
                "support": int(per_class["support"][j]),
            }
            for j, label in enumerate(classes)
        },
        "calibration": calibration(P[np.arange(P.shape[0]), predicted], correct),
        "unknown_labels": unknown,
    }
