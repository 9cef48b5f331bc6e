"""Verifying a model: retrain it from its receipt (same data, config, seed and BLAS thread count) and compare
the weights bit for bit; check the stored blob against its checksum on the way."""

from __future__ import annotations

import contextlib
from typing import Any

from threadpoolctl import threadpool_limits

import engine
from worker.attempts import Attempts
from worker.blobs import BlobError
from worker.evaluation import finish
from worker.jobstate import JobStatus
from worker.receipts import environment, environment_differs, parent_model, weights_sha256
from worker.records import JobRecord, ModelRecord, utc_now
from worker.store import Store, new_id


def _stored_weights(store: Store, record: ModelRecord) -> tuple[dict[str, Any], str | None]:
    """({"ok", "message"} of the stored blob's checksum, sha256 of its weights when it is readable)."""
    try:
        stored = engine.loads(store.load_model_bytes(record.id))
    except (BlobError, ValueError) as exc:  # ModelFormatError is a ValueError
        return {"ok": False, "message": str(exc)}, None
    return {"ok": True, "message": None}, weights_sha256(stored)


def _retrain(store: Store, receipt: dict[str, Any], stop: Any) -> tuple[engine.TrainResult, dict[str, Any]]:
    """Train again from the receipt, with the recorded BLAS thread count; (result, environment seen)."""
    X, y = store.load_dataset(receipt["dataset_id"])
    config = engine.TrainConfig.from_dict(receipt["config"])
    init = None
    if receipt.get("parent") is not None:
        parent, recorded = parent_model(store, receipt["parent"]["model_id"])
        if recorded["weights_sha256"] != receipt["parent"]["weights_sha256"]:
            raise ValueError(f"init_model {recorded['model_id']} no longer has the weights the receipt records")
        init = parent.params
    threads = receipt.get("environment", {}).get("blas_threads")
    limits = threadpool_limits(limits=int(threads), user_api="blas") if threads else contextlib.nullcontext()
    with limits:
        seen = environment()
        result = engine.train(X, y, config, on_epoch=stop, init=init)
    return result, seen


def verify_model(store: Store, record: ModelRecord, *, stop: Any = None) -> dict[str, Any] | None:
    """The verification result of `record` (stored with the model), or None when `stop` ended it early."""
    receipt = record.receipt
    entry: dict[str, Any] = {"id": new_id(), "model_id": record.id, "created_at": utc_now()}
    checksum, stored_sha256 = _stored_weights(store, record)
    if receipt is None:
        return {
            **entry,
            "match": False,
            "weights_sha256": None,
            "expected_sha256": None,
            "environment_differs": [],
            "checksum": checksum,
            "error": "the model has no receipt",
        }
    dataset = store.get_dataset(receipt["dataset_id"])
    if dataset is None:
        raise ValueError(f"dataset {receipt['dataset_id']} of the receipt was deleted; nothing to retrain on")
    result, seen = _retrain(store, receipt, stop)
    if result.stop_reason == "callback":
        return None
    retrained = weights_sha256(result.model)
    expected = receipt["weights_sha256"]
    problems = []
    if not checksum["ok"]:
        problems.append(f"the stored model fails its checksum: {checksum['message']}")
    elif stored_sha256 != expected:
        problems.append("the stored weights differ from the receipt's")
    if dataset.sha256 != receipt["dataset_sha256"]:
        problems.append("the dataset's content differs from the receipt's")
    return {
        **entry,
        "match": retrained == expected and not problems,
        "weights_sha256": retrained,
        "expected_sha256": expected,
        "environment_differs": environment_differs(receipt.get("environment", {}), seen),
        "checksum": checksum,
        "problems": problems,
    }


def run_verification_job(store: Store, attempts: Attempts, record: JobRecord, token: int) -> dict[str, Any]:
    """The body of a `verify` job: verify `spec.model_id`, store the result with the model."""
    model_id = str(record.spec.get("model_id"))
    model = store.get_model(model_id)
    if model is None:
        return finish(attempts, record, token, JobStatus.FAILED, error=f"model {model_id} not found (was it deleted?)")
    result = verify_model(store, model, stop=lambda _metrics: attempts.stop_requested(record.id))
    if result is None:
        return finish(attempts, record, token, JobStatus.CANCELED)
    result["job_id"] = record.id
    store.add_verification(model_id, result)
    summary = {name: result[name] for name in ("id", "match", "weights_sha256", "expected_sha256")}
    return finish(attempts, record, token, JobStatus.SUCCEEDED, model_id=model_id, result={"verification": summary})
