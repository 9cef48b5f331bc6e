"""/v1/models/{ref}/evaluate, /evaluations, /verify and /verifications: evaluation reports of a model on a
dataset, and verifications that retrain it from its receipt; both stored with the model.

Up to `max_predict_rows` rows an evaluation is computed in the request (in the thread pool, off the event
loop); above that it is queued as an `evaluate` job and answered with 202. A verification is always a job.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.auth import Principal
from service.deps import AppState, Caller, Limit, Offset, State, model_or_404
from service.errors import ApiError, invalid, limit_exceeded, not_found, responses
from service.routes.jobs import job_public, submit_job
from service.routes.models import _loaded
from service.schemas import (
    EvaluationCreate,
    EvaluationList,
    EvaluationPublic,
    JobPublic,
    VerificationList,
    VerificationPublic,
)
from worker import BlobError, DatasetRecord, ModelRecord, NotFoundError
from worker.evaluation import FeatureMismatchError, evaluate_model

router = APIRouter(prefix="/v1/models", tags=["models"])

Model = Annotated[ModelRecord, Depends(model_or_404)]


def body_dataset(state: AppState, caller: Principal, dataset_id: str, field: str) -> DatasetRecord:
    """The caller's dataset named by a body field, else 404 naming the field."""
    dataset = state.store.get_dataset(dataset_id)
    if dataset is None or not caller.may_see(dataset.owner):
        error = not_found("dataset", dataset_id)
        error.details = [{"field": field, "message": error.message}]
        raise error
    return dataset


def check_features(record: ModelRecord, dataset: DatasetRecord, field: str) -> None:
    """422 when the dataset's rows do not fit the model."""
    if dataset.n_features != record.n_features:
        raise invalid(
            field,
            f"the dataset has {dataset.n_features} features, the model expects {record.n_features}",
            code="wrong_feature_count",
        )


def evaluate_now(
    state: AppState, caller: Principal, record: ModelRecord, dataset: DatasetRecord, field: str
) -> dict[str, Any]:
    """Evaluate `record` on `dataset` in this request and store the report (blocking: a sync route)."""
    check_features(record, dataset, field)
    maximum = state.settings.max_predict_rows
    if dataset.n_samples > maximum:
        raise limit_exceeded(422, f"{field} rows", "max_predict_rows", dataset.n_samples, maximum)
    try:
        model, _ = _loaded(state, record)
        return evaluate_model(state.store, record, dataset.id, by=caller.owner, model=model)
    except FeatureMismatchError as exc:
        raise invalid(field, str(exc), code="wrong_feature_count") from None
    except NotFoundError:
        if not state.store.model_exists(record.id):
            raise not_found("model", record.id) from None
        raise not_found("dataset", dataset.id) from None
    except BlobError:
        if not state.store.model_exists(record.id):
            raise not_found("model", record.id) from None
        raise
    except (ValueError, TypeError) as exc:  # rows too large for the model's dtype
        raise invalid(field, str(exc)) from None


_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "model": JobPublic,
        "description": "Accepted: queued as a job; its report is stored with the model when it succeeds.",
        "headers": {"Location": {"schema": {"type": "string"}, "description": "URL of the job."}},
    }
}


def _queued(state: AppState, caller: Principal, record: ModelRecord, dataset: DatasetRecord, kind: str) -> JSONResponse:
    epochs = 1 if kind == "evaluate" else int(record.config.get("epochs", 1))
    job = submit_job(
        state,
        caller,
        {"model_id": record.id},
        dataset,
        name=record.name,
        parameters=record.n_parameters,
        epochs=epochs,
        kind=kind,
    )
    body = job_public(state, job).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.post(
    "/{model_id}/evaluate",
    summary="Evaluate a model on a dataset",
    response_model=EvaluationPublic,
    responses={**responses(400, 401, 404, 409, 422, 429, 503), **_ACCEPTED},
)
def evaluate(record: Model, body: EvaluationCreate, state: State, caller: Caller) -> Any:
    """The evaluation report of the model on a dataset (stored with the model): accuracy, log loss,
    macro F1, confusion matrix, per-class figures and calibration. Above `max_predict_rows` rows: 202 and
    an `evaluate` job (follow it at `Location`; the report then appears in the model's evaluations)."""
    dataset = body_dataset(state, caller, body.dataset_id, "dataset_id")
    check_features(record, dataset, "dataset_id")
    if dataset.n_samples > state.settings.max_predict_rows:
        return _queued(state, caller, record, dataset, "evaluate")
    return evaluate_now(state, caller, record, dataset, "dataset_id")


@router.post(
    "/{model_id}/verify",
    status_code=202,
    summary="Verify a model by retraining it",
    response_model=JobPublic,
    responses={**responses(401, 404, 409, 422, 429, 503), **_ACCEPTED},
)
def verify(record: Model, state: State, caller: Caller) -> Any:
    """Queue a `verify` job: a worker retrains the model from its receipt (same data, config, seed and
    BLAS thread count) and compares the weights bit for bit; the result is stored with the model."""
    if record.receipt is None:
        raise ApiError(422, "no_receipt", f"model {record.id!r} has no receipt (it was trained before receipts)")
    dataset_id = str(record.receipt.get("dataset_id", record.dataset_id))
    dataset = state.store.get_dataset(dataset_id)
    if dataset is None:
        raise ApiError(
            422, "dataset_gone", f"the dataset {dataset_id!r} the model was trained on was deleted; cannot retrain"
        )
    return _queued(state, caller, record, dataset, "verify")


@router.get(
    "/{model_id}/verifications",
    summary="List a model's verifications",
    responses=responses(401, 404, 409, 503),
)
def list_verifications(record: Model, state: State, offset: Offset = 0, limit: Limit = 50) -> VerificationList:
    """The verification results of the model, oldest first (the newest 1000 are kept)."""
    entries, total = state.store.list_verifications(record.id, offset, limit)
    items = [VerificationPublic.model_validate(entry) for entry in entries]
    return VerificationList(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/{model_id}/evaluations",
    summary="List a model's evaluations",
    responses=responses(401, 404, 409, 503),
)
def list_evaluations(record: Model, state: State, offset: Offset = 0, limit: Limit = 50) -> EvaluationList:
    """The stored evaluation reports of the model, oldest first (the newest 1000 are kept)."""
    entries, total = state.store.list_evaluations(record.id, offset, limit)
    items = [EvaluationPublic.model_validate(entry) for entry in entries]
    return EvaluationList(items=items, total=total, offset=offset, limit=limit)
