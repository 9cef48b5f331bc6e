"""/v1/models: list, read, delete trained models and predict with them.

Names and versions belong to a lineage (owner, name): versions count up per API key and name, so another
key's models never change yours. Wherever a model id is accepted, a name means the latest version of the
caller's lineage; for an admin key (or without authentication) a name used by one owner means that owner's
latest version, and a name used by several owners gives 409 asking for the model id.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

import engine
from service.body_limit import json_request_body, read_json
from service.deps import AppState, Caller, History, Limit, Offset, State, find_model, model_or_404
from service.errors import ApiError, invalid, limit_exceeded, not_found, responses
from service.onnx_export import export_onnx
from service.schemas import (
    EpochPublic,
    ModelList,
    ModelPublic,
    ModelSummaryPublic,
    Name,
    PredictCreate,
    PredictionPublic,
)
from worker import BlobError, ModelRecord, NotFoundError

router = APIRouter(prefix="/v1/models", tags=["models"])


def _metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    numbers = {key: float(value) for key, value in metrics.items() if type(value) in (int, float)}
    return engine.json_safe(numbers)  # type: ignore[no-any-return]


def model_summary(record: ModelRecord) -> ModelSummaryPublic:
    return ModelSummaryPublic(
        id=record.id,
        name=record.name,
        version=record.version,
        dataset_id=record.dataset_id,
        job_id=record.job_id,
        created_at=record.created_at,  # type: ignore[arg-type]
        layer_sizes=list(record.layer_sizes),
        activation=record.activation,
        output=record.output,
        classes=list(record.classes),
        n_features=record.n_features,
        n_parameters=record.n_parameters,
        metrics=_metrics(record.metrics),  # type: ignore[arg-type]
        config=dict(record.config),
        parent_model_id=record.parent_model_id,
    )


Model = Annotated[ModelRecord, Depends(model_or_404)]


@router.get("", summary="List models", responses=responses(401, 422, 503))
def list_models(
    state: State,
    caller: Caller,
    name: Name | None = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> ModelList:
    """The caller's models (every model for admins), newest first; with `name`, the caller's versions of
    that name, newest version first (admins: every owner's models of that name, newest first). Histories
    are left out: read a model for its history."""
    records, total = state.store.list_models(owner=caller.scope, name=name, offset=offset, limit=limit)
    return ModelList(items=[model_summary(r) for r in records], total=total, offset=offset, limit=limit)


@router.get("/{model_id}", summary="Read a model", responses=responses(401, 404, 409, 503))
def read_model(record: Model, state: State, window: History) -> ModelPublic:
    """Architecture, classes, metrics and history of a model; a name means the caller's latest version of
    it (admins: the latest version when one owner uses the name, else 409 asking for the id).

    The history is paged: `history_offset` (default 0) and `history_limit` (default 1000) choose the entries,
    `history_total` tells how many there are."""
    full = state.store.get_model(record.id)  # the cached record keeps no history
    if full is None:
        raise not_found("model", record.id)
    page = full.history[window.offset : window.offset + window.limit]
    return ModelPublic(
        **model_summary(full).model_dump(),
        history=[EpochPublic.model_validate(entry) for entry in page],
        history_total=len(full.history),
        history_offset=window.offset,
        validation_report=full.validation_report,
        receipt=full.receipt,
    )


@router.delete("/{model_id}", status_code=204, summary="Delete a model", responses=responses(401, 404, 409, 503))
def delete_model(record: Model, state: State) -> Response:
    """Delete one model version (a name means the caller's latest version; admins: 409 when several owners
    use the name)."""
    state.store.delete_model(record.id)
    state.records.invalidate(record.id)
    state.cache.invalidate(record.id)
    return Response(status_code=204)


def _stored_bytes(state: AppState, record: ModelRecord) -> bytes:
    """The model's own `.npz` bytes, checksum verified; 404 when it was deleted meanwhile."""
    try:
        return state.store.load_model_bytes(record.id)
    except NotFoundError:
        raise not_found("model", record.id) from None
    except BlobError:
        if not state.store.model_exists(record.id):  # deleted between reading its record and its weights
            raise not_found("model", record.id) from None
        raise  # a damaged blob of a live model is our fault, not the client's


def _load(state: AppState, record: ModelRecord) -> engine.Model:
    return engine.loads(_stored_bytes(state, record))


def _loaded(state: AppState, record: ModelRecord) -> tuple[engine.Model, bool]:
    """The model of `record` and whether it was cached (blocking: run it in the thread pool)."""
    return state.cache.get((record.id, record.sha256), lambda: _load(state, record))


def _probabilities(model: engine.Model, X: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):  # overflow from extreme inputs is caught by the caller
        return np.asarray(model.predict_proba(X), dtype=np.float64)


def runs_inline(rows: int, n_parameters: int, max_inline_compute: int) -> bool:
    """Whether a prediction is cheap enough for the event loop: its compute, rows x parameters (about the
    multiply-adds of a forward pass), is within `max_inline_compute` (then the NumPy work costs less than a
    thread-pool hop). Anything larger runs in the thread pool, so one big model never stalls other requests."""
    return rows * n_parameters <= max_inline_compute


@router.post(
    "/{model_id}/predict",
    summary="Predict with a model",
    response_model=PredictionPublic,
    responses=responses(400, 401, 404, 409, 413, 422, 503),
    openapi_extra=json_request_body(PredictCreate),
)
async def predict(model_id: str, request: Request, state: State, caller: Caller) -> Response:
    """Class labels and probabilities (columns in the order of `classes`) for raw feature rows; a name
    means the caller's latest version (admins: 409 when several owners use the name)."""
    started = time.perf_counter()
    body = await read_json(request, PredictCreate)  # off the event loop when large
    # Fast path without Redis nor a thread hop: a model id whose existence was confirmed within
    # `ModelRecords.recheck_seconds` (the staleness bound for deletes by other API processes).
    record = state.records.fresh(model_id)
    if record is None:
        record = await run_in_threadpool(find_model, state, caller, model_id)
    elif not caller.may_see(record.owner):
        raise not_found("model", model_id)
    rows = len(body.instances)
    maximum = state.settings.max_predict_rows
    if rows > maximum:
        raise limit_exceeded(422, "instances", "max_predict_rows", rows, maximum)
    for index, row in enumerate(body.instances):
        if len(row) != record.n_features:
            raise invalid(
                f"instances[{index}]",
                f"{len(row)} features, the model expects {record.n_features}",
                code="wrong_feature_count",
            )
    cached = state.cache.peek((record.id, record.sha256))
    model, hit = (cached, True) if cached is not None else await run_in_threadpool(_loaded, state, record)
    (state.metrics.model_cache_hits if hit else state.metrics.model_cache_misses).inc()
    X = np.asarray(body.instances, dtype=np.float64)
    try:
        if runs_inline(rows, record.n_parameters, state.settings.predict_inline_compute):
            probabilities = _probabilities(model, X)
        else:
            probabilities = await run_in_threadpool(_probabilities, model, X)
    except (ValueError, TypeError, FloatingPointError) as exc:
        raise invalid("instances", str(exc)) from None
    if not np.all(np.isfinite(probabilities)):
        raise invalid("instances", "values too large: the probabilities are not finite")
    classes = [label if isinstance(label, str) else int(label) for label in model.classes]
    if probabilities.ndim == 2 and probabilities.shape[1] == len(classes):
        predictions = [classes[i] for i in np.argmax(probabilities, axis=1).tolist()]
    else:
        raise ApiError(500, "internal_error", "model output does not match its classes")
    state.metrics.prediction_requests.inc()
    state.metrics.prediction_latency.observe(time.perf_counter() - started)
    # Serialised here: a PredictionPublic round trip (validate, then dump) would only re-check these types.
    payload = {
        "model_id": record.id,
        "version": record.version,
        "classes": classes,
        "predictions": predictions,
        "probabilities": probabilities.tolist(),
    }
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


ExportFormat = Literal["onnx", "npz"]


@router.get(
    "/{model_id}/export",
    summary="Export a model",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The model file, as an attachment."},
        **responses(401, 404, 409, 422, 503),
    },
)
def export_model(
    record: Model,
    state: State,
    format: Annotated[
        ExportFormat, Query(description="`onnx` (an ONNX graph) or `npz` (the model's own format).")
    ] = "npz",
) -> Response:
    """The model as a file: `npz` is the model's own format (what `backprop` loads), `onnx` an ONNX graph
    with input `input` (float32, [N, n_features]) and outputs `label` and `probabilities` (float32, [N, k])."""
    if format == "onnx":
        model, _ = _loaded(state, record)
        content = export_onnx(model)
    else:
        content = _stored_bytes(state, record)
    filename = f"{record.name}-v{record.version}.{format}"
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
