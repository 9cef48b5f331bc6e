"""Evaluating a stored model on a stored dataset: the report of `engine.evaluation_report`, stored with the
model. The API runs it directly for small datasets and through the queue (`jobs.run_evaluation`) above that."""

from __future__ import annotations

from typing import Any

import numpy as np

import engine
from worker.records import ModelRecord, utc_now
from worker.store import NotFoundError, Store, new_id


class FeatureMismatchError(ValueError):
    """The dataset's rows do not have the model's number of features."""

    def __init__(self, dataset_features: int, model_features: int) -> None:
        super().__init__(f"the dataset has {dataset_features} features, the model expects {model_features}")
        self.dataset_features = dataset_features
        self.model_features = model_features


def evaluate_model(
    store: Store,
    record: ModelRecord,
    dataset_id: str,
    *,
    by: str | None,
    model: engine.Model | None = None,
) -> dict[str, Any]:
    """Evaluate `record` (its loaded `model` when the caller has it) on dataset `dataset_id`, store the
    report with the model and return it. NotFoundError / BlobError / FeatureMismatchError otherwise."""
    dataset = store.get_dataset(dataset_id)
    if dataset is None:
        raise NotFoundError(f"dataset {dataset_id} not found")
    if dataset.n_features != record.n_features:
        raise FeatureMismatchError(dataset.n_features, record.n_features)
    X, y = store.load_dataset(dataset_id)
    if model is None:
        model = engine.loads(store.load_model_bytes(record.id))
    with np.errstate(all="ignore"):
        probabilities = model.predict_proba(X)
    entry = {
        "id": new_id(),
        "model_id": record.id,
        "name": record.name,
        "version": record.version,
        "dataset_id": dataset_id,
        "dataset_sha256": dataset.sha256,
        "created_at": utc_now(),
        "by": by,
        **engine.evaluation_report(y, probabilities, list(model.classes)),
    }
    store.add_evaluation(record.id, entry)
    return entry
