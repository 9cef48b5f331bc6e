"""/v1/models/{ref}/evaluate and /evaluations: evaluation reports of a model on a dataset, stored with it.

Up to `max_predict_rows` rows the report is computed in the request (in the thread pool, off the event
loop); above that the request is queued as an evaluation job and answered with 202.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from service.auth import Principal
from service.deps import AppState, Caller, State, model_or_404
from service.errors import invalid, limit_exceeded, not_found, responses
from service.routes.models import _loaded
from service.schemas import EvaluationCreate, EvaluationList, EvaluationPublic
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


@router.post(
    "/{model_id}/evaluate",
    summary="Evaluate a model on a dataset",
    response_model=EvaluationPublic,
    responses=responses(401, 404, 409, 422, 503),
)
def evaluate(record: Model, body: EvaluationCreate, state: State, caller: Caller) -> Any:
    """The evaluation report of the model on a dataset (stored with the model): accuracy, log loss,
    macro F1, confusion matrix, per-class figures and calibration."""
    dataset = body_dataset(state, caller, body.dataset_id, "dataset_id")
    return evaluate_now(state, caller, record, dataset, "dataset_id")


@router.get(
    "/{model_id}/evaluations",
    summary="List a model's evaluations",
    responses=responses(401, 404, 409, 503),
)
def list_evaluations(record: Model, state: State) -> EvaluationList:
    """Every stored evaluation report of the model, oldest first."""
    entries = state.store.list_evaluations(record.id)
    return EvaluationList(items=[EvaluationPublic.model_validate(entry) for entry in entries], total=len(entries))
