"""The trained classifier users get: weights plus everything needed to go from raw features to labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.data import Label, check_features, check_labels, row_chunks
from engine.network import Params, forward

Array = NDArray[Any]


class Model:
    """A trained fully-connected classifier.

    Parameters
    ----------
    params : list of (W, b)
        Weights for standardised inputs.
    activation, output : str
        Hidden activation and output layer (``"softmax"`` or ``"sigmoid"``).
    classes : list of int or str
        Sorted original labels; output unit / probability column ``j`` is ``classes[j]``.
    mean, scale : ndarray, shape (n_features,)
        Standardisation statistics of the training split (zeros and ones when not standardising).
    config : dict
        The ``TrainConfig.to_dict()`` it was trained with.
    history : list of dict
        ``EpochMetrics.to_dict()`` per epoch.
    metrics : dict
        Final numbers (see :meth:`engine.Training.result`).
    """

    def __init__(
        self,
        params: Params,
        activation: str,
        output: str,
        classes: list[Label],
        mean: Array,
        scale: Array,
        config: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        self.params = params
        self.activation = activation
        self.output = output
        self.classes = list(classes)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.config: dict[str, Any] = dict(config or {})
        self.history: list[dict[str, Any]] = list(history or [])
        self.metrics: dict[str, Any] = dict(metrics or {})

    @property
    def layer_sizes(self) -> list[int]:
        """``[n_features, h_1, ..., n_out]``."""
        return [int(self.params[0][0].shape[0])] + [int(W.shape[1]) for W, _ in self.params]

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.params[0][0].shape[0])

    @property
    def n_parameters(self) -> int:
        """Number of weights and biases."""
        return int(sum(W.size + b.size for W, b in self.params))

    @property
    def dtype(self) -> np.dtype[Any]:
        """Dtype of the weights (float32 or float64)."""
        return self.params[0][0].dtype

    def _standardised(self, X: Array) -> Array:
        return ((X - self.mean) / self.scale).astype(self.dtype, copy=False)

    def predict_proba(self, X: object) -> NDArray[np.float64]:
        """Class probabilities.

        Parameters
        ----------
        X : array-like, shape (m, n_features)
            Raw features (standardised here with the training statistics).

        Returns
        -------
        ndarray of float64, shape (m, len(classes))
            Rows sum to 1; column ``j`` is the probability of ``classes[j]`` (a sigmoid model's single
            output ``p`` becomes the two columns ``[1 - p, p]``).
        """
        arr = check_features(X, "X", self.n_features)
        out = np.empty((arr.shape[0], len(self.classes)))
        step = row_chunks(arr.shape[0], max(self.layer_sizes)).step
        with np.errstate(all="ignore"):  # overflow is detected below and reported as bad input
            for start in range(0, arr.shape[0], step):
                A = forward(self.params, self._standardised(arr[start : start + step]), self.activation, self.output)
                if self.output == "sigmoid":
                    p = A[:, 0].astype(np.float64)
                    out[start : start + step, 0] = 1.0 - p
                    out[start : start + step, 1] = p
                else:
                    out[start : start + step] = A
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"X row {row} is too large for this {self.dtype.name} model (after standardisation the "
                "values overflow); rescale the features"
            )
        return out

    def predict(self, X: object) -> Array:
        """Predicted labels, shape (m,), of the same kind as ``classes`` (ints or strings)."""
        proba = self.predict_proba(X)
        labels: Array = np.asarray(self.classes)[np.argmax(proba, axis=1)]
        return labels

    def score(self, X: object, y: object) -> float:
        """Accuracy of :meth:`predict` on ``(X, y)``, in [0, 1]."""
        predicted = self.predict(X)
        labels = check_labels(y, len(predicted))
        if labels.dtype.kind != predicted.dtype.kind and not (
            np.issubdtype(labels.dtype, np.integer) and np.issubdtype(predicted.dtype, np.integer)
        ):
            raise TypeError(f"y holds {labels.dtype} labels but the model's classes are {predicted.dtype}")
        return float(np.mean(predicted == labels))

    def __repr__(self) -> str:
        return (
            f"Model(layer_sizes={self.layer_sizes}, activation={self.activation!r}, output={self.output!r}, "
            f"classes={self.classes!r})"
        )
