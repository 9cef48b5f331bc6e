"""Evaluating a stored model on a stored dataset: the report of `engine.evaluation_report`, stored with the
model. The API runs it directly for small datasets and through the queue (`jobs.run_evaluation`) above that."""

from __future__ import annotations

from typing import Any

import numpy as np

import engine
from worker.attempts import Attempts, SupersededAttemptError
from worker.jobstate import JobStatus
from worker.records import JobRecord, ModelRecord, utc_now
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


def validation_report(model: engine.Model, X: np.ndarray, y: np.ndarray, rows: np.ndarray) -> dict[str, Any] | None:
    """The evaluation report of a freshly trained model on its validation split (None without one)."""
    if len(rows) == 0:
        return None
    with np.errstate(all="ignore"):
        probabilities = model.predict_proba(X[rows])
    return engine.evaluation_report(y[rows], probabilities, list(model.classes))


def run_evaluation_job(store: Store, attempts: Attempts, record: JobRecord, token: int) -> dict[str, Any]:
    """The body of an `evaluate` job: evaluate `spec.model_id` on the job's dataset, store the report."""
    model_id = str(record.spec.get("model_id"))
    model = store.get_model(model_id)
    if model is None:
        return finish(attempts, record, token, JobStatus.FAILED, error=f"model {model_id} not found (was it deleted?)")
    entry = evaluate_model(store, model, record.dataset_id, by=record.owner)
    summary = {name: entry[name] for name in ("id", "n_samples", "accuracy", "log_loss", "macro_f1")}
    return finish(attempts, record, token, JobStatus.SUCCEEDED, model_id=model_id, result={"evaluation": summary})


def finish(
    attempts: Attempts,
    record: JobRecord,
    token: int,
    status: JobStatus,
    *,
    error: str | None = None,
    model_id: str | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """End a non-training job with `status` (fenced: a superseded attempt writes nothing)."""
    fields: dict[str, Any] = {"status": status, "finished_at": utc_now()}
    if error is not None:
        fields["error"] = error
    if model_id is not None:
        fields["model_id"] = model_id
    if result is not None:
        fields["result"] = result
    applied, _ = attempts.write(record.id, token, fields, drop_checkpoint=True)
    if not applied:
        raise SupersededAttemptError(record.id, token)
    return {"job_id": record.id, "status": status, **({"error": error} if error else {})}
