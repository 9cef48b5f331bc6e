"""/v1/datasets: upload (CSV, NPZ or JSON), list, read, delete."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.body_limit import is_json, read_json
from service.deps import Caller, Limit, Offset, State, dataset_or_404
from service.errors import ApiError, invalid, responses
from service.parsing import NPZ_MAGIC, Dataset, DatasetError, Limits, from_lists, parse_csv, parse_npz
from service.schemas import DatasetCreate, DatasetList, DatasetPublic
from worker import DatasetRecord

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV with a header row (other columns numeric), "
                            "or NPZ with arrays X (n_samples, n_features) and y (n_samples,).",
                        },
                        "label_column": {
                            "type": "string",
                            "description": "CSV column holding the labels (default: the last column).",
                        },
                        "name": {"type": "string", "pattern": _NAME.pattern, "description": "Dataset name."},
                    },
                },
                "encoding": {"file": {"contentType": "text/csv, application/octet-stream"}},
            },
            "application/json": {
                "schema": DatasetCreate.model_json_schema(),
                "example": {
                    "features": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]],
                    "labels": [1, 1, 0, 0],
                },
            },
        },
    }
}


_FORM_FIELDS = frozenset(_UPLOAD_BODY["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"])


def dataset_public(record: DatasetRecord) -> DatasetPublic:
    return DatasetPublic(
        id=record.id,
        name=record.name,
        n_samples=record.n_samples,
        n_features=record.n_features,
        classes=dict(record.classes),
        created_at=record.created_at,  # type: ignore[arg-type]
    )


def _limits(state: State) -> Limits:
    settings = state.settings
    return Limits(
        max_rows=settings.max_rows,
        max_features=settings.max_features,
        max_classes=settings.max_classes,
        max_bytes=settings.max_upload_bytes,
    )


def _rejected(exc: DatasetError) -> ApiError:
    return ApiError(422, exc.code, exc.message, details=[exc.details])


def _name_from_filename(filename: str | None) -> str | None:
    if not filename:
        return None
    stem = PurePath(filename.replace("\\", "/")).stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64]
    return cleaned if cleaned and _NAME.match(cleaned) else None


def _parse_file(file: IO[bytes], filename: str | None, label_column: str | None, limits: Limits, dtype: str) -> Dataset:
    """An uploaded file (spooled by the multipart parser) as a dataset: NPZ by magic or name, else CSV."""
    magic = file.read(len(NPZ_MAGIC))
    file.seek(0)
    if magic == NPZ_MAGIC or (filename or "").lower().endswith(".npz"):
        return parse_npz(file, limits=limits, dtype=dtype)
    return parse_csv(file, label_column=label_column, limits=limits, dtype=dtype)


async def _from_multipart(request: Request, limits: Limits, dtype: str) -> tuple[Dataset, str | None]:
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid("file", "missing multipart file field `file` (a CSV or NPZ file)")
        unknown = sorted(set(form.keys()) - _FORM_FIELDS)
        if unknown:
            raise invalid(unknown[0], f"unknown form field; the form takes {', '.join(sorted(_FORM_FIELDS))}")
        label_field = form.get("label_column")
        name_field = form.get("name")
        if label_field is not None and not isinstance(label_field, str):
            raise invalid("label_column", "must be a text field, not a file")
        if name_field is not None and (not isinstance(name_field, str) or not _NAME.match(name_field)):
            raise invalid("name", f"must match {_NAME.pattern}")
        label_column = label_field.strip() if isinstance(label_field, str) and label_field.strip() else None
        name = name_field if isinstance(name_field, str) else _name_from_filename(upload.filename)
        try:  # parsed from the spooled file while the form still holds it: no copy of the body in memory
            dataset = await run_in_threadpool(_parse_file, upload.file, upload.filename, label_column, limits, dtype)
        except DatasetError as exc:
            raise _rejected(exc) from None
    return dataset, name


async def _from_json(request: Request, limits: Limits, dtype: str) -> tuple[Dataset, str | None]:
    parsed = await read_json(request, DatasetCreate)
    try:
        dataset = await run_in_threadpool(from_lists, parsed.features, parsed.labels, limits=limits, dtype=dtype)
    except DatasetError as exc:
        raise _rejected(exc) from None
    return dataset, parsed.name


@router.post(
    "",
    status_code=201,
    summary="Upload a dataset",
    responses={
        **responses(400, 401, 413, 415, 422, 503, 507),
        201: {
            "description": "The dataset's summary.",
            "links": {
                "ReadDataset": {
                    "operationId": "read_dataset",
                    "parameters": {"dataset_id": "$response.body#/id"},
                },
                "DeleteDataset": {
                    "operationId": "delete_dataset",
                    "parameters": {"dataset_id": "$response.body#/id"},
                },
                "TrainOnDataset": {
                    "operationId": "create_job",
                    "requestBody": {"dataset_id": "$response.body#/id"},
                },
            },
        },
    },
    openapi_extra=_UPLOAD_BODY,
)
async def create_dataset(request: Request, state: State, caller: Caller) -> DatasetPublic:
    """Upload a dataset: multipart `file` (CSV with a header row, or NPZ with X and y) or a JSON body.

    CSV: the label column is `label_column` (default the last one); every other column must be numeric.
    Labels that all look like integers become integers. Malformed files give 422 naming row and column.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limits = _limits(state)
    dtype = state.settings.dataset_dtype
    if media == "multipart/form-data":
        dataset, name = await _from_multipart(request, limits, dtype)
    elif is_json(media):
        dataset, name = await _from_json(request, limits, dtype)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media or '(none)'!r}: send multipart/form-data (field `file`) or application/json",
        )
    record = await run_in_threadpool(state.store.create_dataset, dataset.X, dataset.y, owner=caller.owner, name=name)
    return dataset_public(record)


@router.get("", summary="List datasets", responses=responses(401, 422, 503))
def list_datasets(
    state: State,
    caller: Caller,
    offset: Offset = 0,
    limit: Limit = 50,
) -> DatasetList:
    """The caller's datasets (every dataset for admins), newest first."""
    records, total = state.store.list_datasets(owner=caller.scope, offset=offset, limit=limit)
    return DatasetList(items=[dataset_public(r) for r in records], total=total, offset=offset, limit=limit)


@router.get("/{dataset_id}", summary="Read a dataset", responses=responses(401, 404, 503))
def read_dataset(record: Annotated[DatasetRecord, Depends(dataset_or_404)]) -> DatasetPublic:
    """One dataset's summary: size, features and class counts."""
    return dataset_public(record)


@router.delete("/{dataset_id}", status_code=204, summary="Delete a dataset", responses=responses(401, 404, 503))
def delete_dataset(record: Annotated[DatasetRecord, Depends(dataset_or_404)], state: State) -> Response:
    """Delete a dataset and its arrays (models trained on it are kept)."""
    state.store.delete_dataset(record.id)
    return Response(status_code=204)
