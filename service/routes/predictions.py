"""Batch predictions: score a stored dataset or an uploaded file on the workers, follow it, cancel it, and
stream its result as CSV or .npz.

A finished result is its own blob: it stays readable after the model is deleted. With `include_input`,
the input rows are read again: for a dataset that was deleted since, that answers 404 (the result alone
still streams).
"""

from __future__ import annotations

import csv
import io
import itertools
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.auth import Principal
from service.batch_input import Features, parse_features
from service.deps import AppState, Caller, State, find_model
from service.errors import ApiError, invalid, limit_exceeded, not_found, responses
from service.parsing import DatasetError, Limits
from service.schemas import BatchPredictionCreate, BatchPredictionPublic, BatchProgressPublic
from worker import (
    TERMINAL_STATUSES,
    BlobError,
    JobStatus,
    ModelRecord,
    PredictionRecord,
    Predictions,
    cancel_prediction,
    enqueue_prediction,
    is_id,
    job_timeout,
    open_input,
    open_result,
    queue_depth,
    reconcile_prediction,
)
from worker.npyfiles import copy_member, iter_rows, member_writer

router = APIRouter(tags=["predictions"])

_FORM_FIELDS = frozenset({"file", "label_column"})
_COPY_PIECE = 1024 * 1024

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": BatchPredictionCreate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV with a header row, or NPZ with an array X (n_rows, n_features); "
                            "a label column (or y) is optional and ignored.",
                        },
                        "label_column": {"type": "string", "description": "CSV column to ignore (labels)."},
                    },
                }
            },
        },
    }
}


def predictions_of(state: AppState) -> Predictions:
    return Predictions(state.redis, state.store.blobs)


def prediction_public(record: PredictionRecord) -> BatchPredictionPublic:
    succeeded = record.status == JobStatus.SUCCEEDED
    return BatchPredictionPublic(
        id=record.id,
        model_id=record.model_id,
        model_name=record.model_name,
        model_version=record.model_version,
        classes=list(record.classes),
        source=record.source,  # type: ignore[arg-type]
        dataset_id=record.dataset_id,
        n_rows=record.n_rows,
        n_features=record.n_features,
        status=record.status,
        progress=BatchProgressPublic.model_validate(record.progress) if record.progress else None,
        error=record.error,
        result_url=f"/v1/predictions/{record.id}/result" if succeeded else None,
        created_at=record.created_at,  # type: ignore[arg-type]
        started_at=record.started_at,  # type: ignore[arg-type]
        finished_at=record.finished_at,  # type: ignore[arg-type]
    )


def prediction_or_404(prediction_id: str, state: State, caller: Caller) -> PredictionRecord:
    """The caller's batch prediction (any for admins), else 404 (also for anything that is not an id)."""
    predictions = predictions_of(state)
    record = predictions.get(prediction_id) if is_id(prediction_id) else None
    if record is None or not caller.may_see(record.owner):
        raise not_found("prediction", prediction_id)
    return reconcile_prediction(predictions, record, queue_name=state.settings.queue_name)


Prediction = Annotated[PredictionRecord, Depends(prediction_or_404)]


def _wrong_features(field: str, got: int, model: ModelRecord) -> ApiError:
    return invalid(field, f"{got} features, the model expects {model.n_features}", code="wrong_feature_count")


async def _from_dataset(request: Request, state: AppState, caller: Principal, model: ModelRecord) -> dict[str, Any]:
    try:
        body = BatchPredictionCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
    dataset = state.store.get_dataset(body.dataset_id)
    if dataset is None or not caller.may_see(dataset.owner):
        error = not_found("dataset", body.dataset_id)
        error.details = [{"field": "dataset_id", "message": error.message}]
        raise error
    if dataset.n_features != model.n_features:
        raise _wrong_features("dataset_id", dataset.n_features, model)
    return {
        "n_rows": dataset.n_samples,
        "dataset_id": dataset.id,
        "X": None,
        "sha256": dataset.sha256,
        "feature_names": None,
    }


async def _from_upload(request: Request, state: AppState, model: ModelRecord) -> dict[str, Any]:
    async with request.form(max_files=1, max_fields=5) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid("file", "missing multipart file field `file` (a CSV or NPZ file)")
        unknown = sorted(set(form.keys()) - _FORM_FIELDS)
        if unknown:
            raise invalid(unknown[0], f"unknown form field; the form takes {', '.join(sorted(_FORM_FIELDS))}")
        label_field = form.get("label_column")
        if label_field is not None and not isinstance(label_field, str):
            raise invalid("label_column", "must be a text field, not a file")
        data = await upload.read()
        filename = upload.filename
    settings = state.settings
    limits = Limits(
        max_rows=settings.max_rows,
        max_features=settings.max_features,
        max_classes=settings.max_classes,
        max_bytes=settings.max_upload_bytes,
    )
    label_column = label_field.strip() if isinstance(label_field, str) and label_field.strip() else None
    try:
        features: Features = await run_in_threadpool(
            parse_features,
            data,
            filename=filename,
            label_column=label_column,
            n_features=model.n_features,
            limits=limits,
        )
    except DatasetError as exc:
        raise ApiError(422, exc.code, exc.message, details=[exc.details]) from None
    return {
        "n_rows": len(features.X),
        "dataset_id": None,
        "X": features.X,
        "sha256": None,
        "feature_names": features.names,
    }


@router.post(
    "/v1/models/{model_id}/predictions",
    status_code=202,
    summary="Submit a batch prediction",
    response_model=BatchPredictionPublic,
    responses={
        **responses(400, 401, 404, 409, 413, 415, 422, 503, 507),
        202: {
            "description": "Accepted: queued.",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "URL of the prediction."}},
        },
    },
    openapi_extra=_UPLOAD_BODY,
)
async def create_batch_prediction(model_id: str, request: Request, state: State, caller: Caller) -> Response:
    """Score every row of a stored dataset (JSON `{"dataset_id": ...}`) or of an uploaded CSV/NPZ (multipart
    `file`) on the workers; follow it at the `Location` it returns, then read its result."""
    model = await run_in_threadpool(find_model, state, caller, model_id)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        source = await _from_upload(request, state, model)
    elif media == "application/json" or media.endswith("+json"):
        source = await _from_dataset(request, state, caller, model)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media or '(none)'!r}: send application/json "
            "(`dataset_id`) or multipart/form-data (field `file`)",
        )
    settings = state.settings
    depth = queue_depth(state.redis, queue_name=settings.queue_name)
    if depth >= settings.max_queue_depth:
        error = limit_exceeded(503, "queue depth", "max_queue_depth", depth + 1, settings.max_queue_depth)
        error.headers = {"Retry-After": "30"}
        raise error
    predictions = predictions_of(state)
    record = await run_in_threadpool(
        predictions.create, owner=caller.owner, model=model, chunk_rows=settings.prediction_chunk_rows, **source
    )
    timeout = job_timeout(
        record.n_rows, model.n_parameters, 1, minimum=settings.job_timeout_min, maximum=settings.job_timeout_max
    )
    try:
        enqueue_prediction(state.redis, record, queue_name=settings.queue_name, timeout=timeout)
    except Exception:
        predictions.move(record.id, JobStatus.FAILED, error="could not be queued")
        raise
    payload = prediction_public(record).model_dump_json()
    return Response(
        payload, status_code=202, media_type="application/json", headers={"Location": f"/v1/predictions/{record.id}"}
    )


@router.get("/v1/predictions/{prediction_id}", summary="Read a batch prediction", responses=responses(401, 404, 503))
def read_batch_prediction(record: Prediction) -> BatchPredictionPublic:
    """Status, progress (rows done) and, once succeeded, the URL of the result."""
    return prediction_public(record)


@router.post(
    "/v1/predictions/{prediction_id}/cancel",
    summary="Cancel a batch prediction",
    responses=responses(401, 404, 409, 503),
)
def cancel_batch_prediction(record: Prediction, state: State) -> BatchPredictionPublic:
    """A queued prediction never runs; a running one ends `canceled` now and its worker stops before the
    next chunk of rows (no result is kept)."""
    if record.status in TERMINAL_STATUSES:
        raise ApiError(409, "conflict", f"prediction {record.id!r} is already {record.status}")
    updated = cancel_prediction(predictions_of(state), record, queue_name=state.settings.queue_name)
    return prediction_public(updated)


@router.delete(
    "/v1/predictions/{prediction_id}",
    status_code=204,
    summary="Delete a batch prediction",
    responses=responses(401, 404, 409, 503),
)
def delete_batch_prediction(record: Prediction, state: State) -> Response:
    """Delete a finished prediction: its record, its result and its uploaded input (a dataset stays). 409
    while it is queued or running."""
    if record.status not in TERMINAL_STATUSES:
        raise ApiError(409, "conflict", f"prediction {record.id!r} is {record.status}; cancel it first")
    if not predictions_of(state).delete(record):
        raise not_found("prediction", record.id)
    return Response(status_code=204)


class _Pipe:
    """A write-only stream collecting what a ZipFile writes, handed out piece by piece."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do: `take` hands the parts out."""

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts = []
        return data


def _input_rows(inputs: zipfile.ZipFile | None, chunk_rows: int) -> Iterator[np.ndarray | None]:
    if inputs is None:
        return itertools.repeat(None)
    return (X.astype(np.float64) for X in iter_rows(inputs, "X", chunk_rows))


def _csv_chunks(record: PredictionRecord, result: zipfile.ZipFile, inputs: zipfile.ZipFile | None) -> Iterator[bytes]:
    """`[inputs...,] prediction, p_<class>...` rows, one chunk of rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = record.feature_names or [f"x{index + 1}" for index in range(record.n_features)]
    writer.writerow([*(names if inputs is not None else []), "prediction", *(f"p_{c}" for c in record.classes)])
    chunk = record.chunk_rows
    pieces = zip(
        iter_rows(result, "predictions", chunk),
        iter_rows(result, "probabilities", chunk),
        _input_rows(inputs, chunk),
        strict=False,
    )
    for labels, probabilities, X in pieces:
        if X is None:
            writer.writerows([label, *row] for label, row in zip(labels.tolist(), probabilities.tolist(), strict=True))
        else:
            writer.writerows(
                [*x, label, *row]
                for x, label, row in zip(X.tolist(), labels.tolist(), probabilities.tolist(), strict=True)
            )
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


def _npz_chunks(record: PredictionRecord, result: zipfile.ZipFile, inputs: zipfile.ZipFile | None) -> Iterator[bytes]:
    """The result archive (`classes`, `predictions`, `probabilities`, and `X` with the input), streamed."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w") as archive:  # type: ignore[call-overload]
        for name in ("classes", "predictions", "probabilities"):
            for _ in copy_member(result, archive, name, _COPY_PIECE):
                yield pipe.take()
        if inputs is not None:
            shape = (record.n_rows, record.n_features)
            with member_writer(archive, "X", np.dtype(np.float64), shape) as stream:
                for X in _input_rows(inputs, record.chunk_rows):
                    assert X is not None  # inputs were given
                    stream.write(X.tobytes())
                    yield pipe.take()
    yield pipe.take()


def _streamed(chunks: Iterator[bytes], opened: ExitStack) -> Iterator[bytes]:
    """`chunks`, then the archives they read are closed (also when the client goes away)."""
    with opened:
        yield from chunks


def _open_all(
    state: AppState, record: PredictionRecord, include_input: bool
) -> tuple[ExitStack, zipfile.ZipFile, zipfile.ZipFile | None]:
    """The result archive (and the input's, with `include_input`), checksums verified, on one exit stack."""
    with ExitStack() as stack:
        result = stack.enter_context(open_result(state.store.blobs, record))
        inputs = None
        if include_input:
            try:
                inputs = stack.enter_context(open_input(state.store.blobs, record))
            except BlobError:
                what = f"dataset {record.dataset_id}" if record.dataset_id else "uploaded input"
                raise ApiError(
                    404,
                    "not_found",
                    f"include_input: the {what} of prediction {record.id} was deleted; "
                    "the result without include_input is still available",
                ) from None
        return stack.pop_all(), result, inputs


ResultFormat = Literal["csv", "npz"]


@router.get(
    "/v1/predictions/{prediction_id}/result",
    summary="Read a batch prediction's result",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/octet-stream": {}}, "description": "The result, streamed."},
        **responses(401, 404, 409, 422, 503),
    },
)
async def read_batch_prediction_result(
    record: Prediction,
    state: State,
    format: Annotated[ResultFormat, Query(description="`csv` or `npz`.")] = "csv",
    include_input: Annotated[bool, Query(description="Also the input columns (`X` in the .npz).")] = False,
) -> StreamingResponse:
    """Per row the predicted label and one probability per class (`prediction,p_<class>,...`), optionally
    after the input columns; streamed in chunks of rows."""
    if record.status != JobStatus.SUCCEEDED:
        raise ApiError(
            409, "conflict", f"prediction {record.id!r} is {record.status}; a result exists once it has succeeded"
        )
    opened, result, inputs = await run_in_threadpool(_open_all, state, record, include_input)
    if format == "csv":
        chunks, media = _csv_chunks(record, result, inputs), "text/csv"
    else:
        chunks, media = _npz_chunks(record, result, inputs), "application/octet-stream"
    filename = f"prediction-{record.id}.{format}"
    return StreamingResponse(
        _streamed(chunks, opened),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
