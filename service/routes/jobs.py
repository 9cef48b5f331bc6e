"""/v1/jobs: submit a training job, follow it, list jobs, cancel one, delete a finished one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from engine import TrainConfig
from service.auth import Principal
from service.deps import (
    HISTORY_LIMIT,
    AppState,
    Caller,
    History,
    HistoryWindow,
    Limit,
    Offset,
    State,
    find_model,
    job_or_404,
)
from service.errors import ApiError, invalid, limit_exceeded, not_found, responses
from service.schemas import (
    EpochPublic,
    JobCreate,
    JobList,
    JobPublic,
    JobSummaryPublic,
    ProgressPublic,
)
from worker import (
    TERMINAL_STATUSES,
    DatasetRecord,
    JobNotFinishedError,
    JobRecord,
    JobStatus,
    ModelRecord,
    QueueLimitError,
    cancel_job,
    enqueue_training,
    eta_seconds,
    job_timeout,
    queue_depth,
    queue_position,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _progress(record: JobRecord) -> ProgressPublic | None:
    if not record.progress:
        return None
    progress = ProgressPublic.model_validate(record.progress)
    if progress.eta_seconds is None and record.status == "running":
        progress.eta_seconds = eta_seconds(progress.epoch, progress.epochs or progress.epoch, progress.seconds)
    return progress


def job_summary(record: JobRecord, position: int | None = None) -> JobSummaryPublic:
    return JobSummaryPublic(
        id=record.id,
        kind=record.kind,  # type: ignore[arg-type]
        name=record.name,
        dataset_id=record.dataset_id,
        status=record.status,
        config=dict(record.spec),
        queue_position=position,
        progress=_progress(record),
        model_id=record.model_id,
        error=record.error,
        attempts=record.attempts,
        sweep_id=record.sweep_id,
        blas_threads=record.blas_threads,
        created_at=record.created_at,  # type: ignore[arg-type]
        started_at=record.started_at,  # type: ignore[arg-type]
        finished_at=record.finished_at,  # type: ignore[arg-type]
        result=record.result,
    )


def job_public(state: AppState, record: JobRecord, window: HistoryWindow | None = None) -> JobPublic:
    """The job with one page of its history (the first page by default)."""
    window = window or HistoryWindow(0, HISTORY_LIMIT)
    entries, total = state.store.job_history(record.id, window.offset, window.limit)
    return JobPublic(
        **job_summary(record, _position(state, record)).model_dump(),
        history=[EpochPublic.model_validate(entry) for entry in entries],
        history_total=total,
        history_offset=window.offset,
    )


def _position(state: AppState, record: JobRecord) -> int | None:
    if record.status != "queued":
        return None
    return queue_position(state.redis, record.id, queue_name=state.settings.queue_name)


def check_compute(config: TrainConfig, n_features: int, n_classes: int, state: State) -> int:
    """Caps on the network and the training run; returns the network's parameter count."""
    settings = state.settings
    if len(config.hidden_layers) > settings.max_hidden_layers:
        raise limit_exceeded(
            422, "hidden_layers", "max_hidden_layers", len(config.hidden_layers), settings.max_hidden_layers
        )
    for index, width in enumerate(config.hidden_layers):
        if width > settings.max_layer_width:
            raise limit_exceeded(
                422, f"hidden_layers[{index}]", "max_layer_width", width, settings.max_layer_width
            )
    if config.epochs > settings.max_epochs:
        raise limit_exceeded(422, "epochs", "max_epochs", config.epochs, settings.max_epochs)
    if config.batch_size > settings.max_batch_size:
        raise limit_exceeded(422, "batch_size", "max_batch_size", config.batch_size, settings.max_batch_size)
    try:
        parameters = config.network_shape(n_features, n_classes).n_parameters
    except ValueError:  # the one rule network_shape enforces: a sigmoid output needs two classes
        raise invalid("output", f"'sigmoid' needs exactly 2 classes; the dataset has {n_classes}") from None
    if parameters > settings.max_parameters:
        raise limit_exceeded(422, "hidden_layers", "max_parameters", parameters, settings.max_parameters)
    return parameters


def _architecture_differences(parent: ModelRecord, config: TrainConfig, dataset: DatasetRecord) -> list[str]:
    """How the network a job would train differs from `parent`'s (empty: its weights fit)."""
    output, layer_sizes = config.network_shape(dataset.n_features, len(dataset.classes))
    differences = []
    if layer_sizes[0] != parent.layer_sizes[0]:
        differences.append(f"features: the dataset has {layer_sizes[0]}, the model {parent.layer_sizes[0]}")
    if layer_sizes[1:-1] != parent.layer_sizes[1:-1]:
        differences.append(f"hidden_layers: the job has {layer_sizes[1:-1]}, the model {parent.layer_sizes[1:-1]}")
    parent_classes = sorted(str(label) for label in parent.classes)
    if sorted(dataset.classes) != parent_classes:
        differences.append(f"classes: the dataset has {sorted(dataset.classes)}, the model {parent_classes}")
    if config.activation != parent.activation:
        differences.append(f"activation: the job has {config.activation!r}, the model {parent.activation!r}")
    if output != parent.output:
        differences.append(f"output: the job has {output!r}, the model {parent.output!r}")
    return differences


def _parent_model(
    state: AppState, caller: Principal, ref: str, config: TrainConfig, dataset: DatasetRecord
) -> ModelRecord:
    """The model `init_model` names (404 naming the field), when its network is the job's (else 422)."""
    try:
        parent = find_model(state, caller, ref)
    except ApiError as error:
        error.details = [{"field": "init_model", "message": error.message}]
        raise
    differences = _architecture_differences(parent, config, dataset)
    if differences:
        raise invalid(
            "init_model",
            f"the model's network differs from this job's: {'; '.join(differences)}",
            code="architecture_mismatch",
            differences=differences,
        )
    return parent


def _train_config(body: JobCreate) -> TrainConfig:
    try:
        return body.train_config()
    except (ValueError, TypeError) as exc:
        raise invalid("body", str(exc)) from None


@router.post(
    "",
    status_code=202,
    summary="Submit a training job",
    responses={
        **responses(400, 401, 404, 413, 422, 429, 503),
        202: {
            "description": "Accepted: queued.",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "URL of the job."}},
            "links": {
                "ReadJob": {"operationId": "read_job", "parameters": {"job_id": "$response.body#/id"}},
                "CancelJob": {"operationId": "cancel", "parameters": {"job_id": "$response.body#/id"}},
            },
        },
    },
)
def create_job(body: JobCreate, response: Response, state: State, caller: Caller) -> JobPublic:
    """Queue training of a classifier on a dataset; poll the job at the `Location` it returns."""
    dataset = state.store.get_dataset(body.dataset_id)
    if dataset is None or not caller.may_see(dataset.owner):
        error = not_found("dataset", body.dataset_id)
        error.details = [{"field": "dataset_id", "message": error.message}]
        raise error
    config = _train_config(body)
    parameters = check_compute(config, dataset.n_features, len(dataset.classes), state)
    parent = None if body.init_model is None else _parent_model(state, caller, body.init_model, config, dataset)
    name = body.name or (parent.name if parent else None) or dataset.name or f"dataset-{dataset.id[:8]}"
    record = submit_job(
        state,
        caller,
        config.to_dict(),
        dataset,
        name=name,
        parameters=parameters,
        epochs=config.epochs,
        parent_model_id=None if parent is None else parent.id,
    )
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return job_public(state, record)


def submit_job(
    state: AppState,
    caller: Principal,
    spec: dict[str, Any],
    dataset: DatasetRecord,
    *,
    name: str,
    parameters: int,
    epochs: int,
    kind: str = "train",
    parent_model_id: str | None = None,
) -> JobRecord:
    """Create and queue a job within the per-key and queue-depth limits (429 / 503 otherwise)."""
    settings = state.settings
    depth = queue_depth(state.redis, queue_name=settings.queue_name)
    if depth >= settings.max_queue_depth:
        error = limit_exceeded(503, "queue depth", "max_queue_depth", depth + 1, settings.max_queue_depth)
        error.headers = {"Retry-After": "30"}
        raise error
    try:  # the per-key limit is checked and counted in the same step as the job is created
        record = state.store.create_job(
            spec,
            owner=caller.owner,
            dataset_id=dataset.id,
            name=name,
            max_queued=settings.max_queued_jobs_per_key,
            kind=kind,
            parent_model_id=parent_model_id,
        )
    except QueueLimitError as exc:
        limit = settings.max_queued_jobs_per_key
        raise limit_exceeded(429, "queued jobs", "max_queued_jobs_per_key", exc.queued + 1, limit) from None
    timeout = job_timeout(
        dataset.n_samples, parameters, epochs, minimum=settings.job_timeout_min, maximum=settings.job_timeout_max
    )
    try:
        enqueue_training(
            state.redis, record, queue_name=settings.queue_name, timeout=timeout, retries=settings.job_retries
        )
    except Exception:
        state.store.set_job_fields(record.id, status="failed", error="could not be queued")
        raise
    return record


@router.get("", summary="List jobs", responses=responses(401, 422, 503))
def list_jobs(
    state: State,
    caller: Caller,
    status: JobStatus | None = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> JobList:
    """The caller's jobs (every job for admins), newest first; `status` filters. Histories are left out:
    read a job for its history."""
    records, total = state.store.list_jobs(owner=caller.scope, status=status, offset=offset, limit=limit)
    items = [job_summary(record, _position(state, record)) for record in records]
    return JobList(items=items, total=total, offset=offset, limit=limit)


@router.get("/{job_id}", summary="Read a job", responses=responses(401, 404, 503))
def read_job(record: Annotated[JobRecord, Depends(job_or_404)], state: State, window: History) -> JobPublic:
    """Status, progress (with ETA), per-epoch history, queue position while queued, model id once done.

    The history is paged: `history_offset` (default 0) and `history_limit` (default 1000) choose the entries,
    `history_total` tells how many there are."""
    return job_public(state, record, window)


@router.post("/{job_id}/cancel", summary="Cancel a job", responses=responses(401, 404, 409, 503))
def cancel(record: Annotated[JobRecord, Depends(job_or_404)], state: State) -> JobPublic:
    """A queued job never runs; a running job stops at the next epoch boundary and ends `canceled`."""
    if record.status in TERMINAL_STATUSES:
        raise ApiError(409, "conflict", f"job {record.id!r} is already {record.status}")
    updated = cancel_job(state.redis, state.store, record.id, queue_name=state.settings.queue_name)
    return job_public(state, updated)


@router.delete("/{job_id}", status_code=204, summary="Delete a job", responses=responses(401, 404, 409, 503))
def delete_job(record: Annotated[JobRecord, Depends(job_or_404)], state: State) -> Response:
    """Delete a finished job's record and history; the model it trained stays. 409 while it is unfinished."""
    try:
        deleted = state.store.delete_job(record.id)
    except JobNotFinishedError as exc:
        raise ApiError(409, "conflict", f"job {record.id!r} is {exc.status}; cancel it first") from None
    if not deleted:
        raise not_found("job", record.id)
    return Response(status_code=204)
