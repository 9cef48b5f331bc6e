"""/v1/sweeps: hyperparameter sweeps whose trials x seeds run as normal jobs on the workers."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import ValidationError

from service.deps import AppState, Caller, Limit, Offset, State
from service.errors import ApiError, field_path, invalid, limit_exceeded, not_found, responses
from service.routes.jobs import check_compute
from service.schemas import JobCreate, SweepCreate, SweepList, SweepPublic, SweepSummaryPublic
from worker import (
    QueueLimitError,
    SweepNotFinishedError,
    SweepRecord,
    get_sweep,
    grid_trials,
    is_id,
    new_sweep_id,
    queue_depth,
    random_trials,
    sweep_view,
    utc_now,
)
from worker import cancel_sweep as stop_sweep
from worker import create_sweep as submit_sweep
from worker import delete_sweep as remove_sweep
from worker import list_sweeps as find_sweeps

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

_NOT_OPTIONS = ("seed", "dataset_id", "name")


def sweep_or_404(sweep_id: str, state: State, caller: Caller) -> SweepRecord:
    """The caller's sweep, else 404 (also for anything that is not an id)."""
    record = get_sweep(state.redis, sweep_id) if is_id(sweep_id) else None
    if record is None or not caller.may_see(record.owner):
        raise not_found("sweep", sweep_id)
    return record


def _origin(body: SweepCreate, option: str) -> str:
    """Where a trial's option came from: `grid.x`, `random.space.x` or `base.x`."""
    if body.grid is not None and option in body.grid:
        return f"grid.{option}"
    if body.random is not None and option in body.random.space:
        return f"random.space.{option}"
    return f"base.{option}"


def _trial_error(body: SweepCreate, index: int, error: ApiError | ValidationError) -> ApiError:
    """A 422 naming the trial and the field of the request the bad value came from (a limit keeps its name,
    value and maximum)."""
    extra: dict[str, Any] = {}
    code = "validation_error"
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        path = field_path(("body", *tuple(first.get("loc", ()))))
        message = str(first.get("msg", "invalid value"))
    else:
        extra = dict(error.details[0]) if error.details else {}
        path, message, code = str(extra.pop("field", "body")), error.message.split(": ", 1)[-1], error.code
        extra.pop("message", None)
    option = path.split("[", 1)[0].split(".", 1)[0]
    where = _origin(body, option) + path[len(option):]
    return invalid(where, f"{message} (trial {index})", code=code, trial=index, **extra)


def _trials(body: SweepCreate, max_jobs: int) -> list[dict[str, Any]]:
    """The trials' overrides, after checking that trials x seeds stays within `max_jobs`."""
    for source, options in (("base", body.base), ("grid", body.grid or {}),
                            ("random.space", body.random.space if body.random else {})):
        for option in options:
            if option in _NOT_OPTIONS:
                hint = "set by `seeds`" if option == "seed" else "not a job option"
                raise invalid(f"{source}.{option}", hint)
            if body.early_stop is not None and option == "epochs" and source != "base":
                raise invalid(f"{source}.epochs", "with early_stop the epochs of each rung come from early_stop")
    n_trials = math.prod(len(values) for values in body.grid.values()) if body.grid else body.random.n_trials  # type: ignore[union-attr]
    jobs = n_trials * len(body.seeds)
    if jobs > max_jobs:
        raise limit_exceeded(422, "trials x seeds", "max_sweep_jobs", jobs, max_jobs)
    if body.grid is not None:
        return grid_trials(body.grid)
    assert body.random is not None
    space = {name: dist.model_dump(exclude_none=True) for name, dist in body.random.space.items()}
    return random_trials(body.random.n_trials, body.random.seed, space)


def _configs(body: SweepCreate, trials: list[dict[str, Any]], state: AppState, n_features: int,
             n_classes: int) -> tuple[list[dict[str, Any]], list[int]]:
    """Each trial's TrainConfig dict, validated exactly as POST /v1/jobs validates a job, and its parameter
    count."""
    configs, parameters = [], []
    for index, overrides in enumerate(trials):
        try:
            job = JobCreate.model_validate({"dataset_id": body.dataset_id, **body.base, **overrides})
            config = job.train_config()
            parameters.append(check_compute(config, n_features, n_classes, state))
        except (ValidationError, ApiError) as exc:
            raise _trial_error(body, index, exc) from None
        except (ValueError, TypeError) as exc:
            raise invalid("body", f"{exc} (trial {index})", trial=index) from None
        if config.validation_fraction <= 0:
            error = ApiError(422, "validation_error", "validation_fraction: the metric needs a validation split",
                             details=[{"field": "validation_fraction"}])
            raise _trial_error(body, index, error)
        configs.append(config.to_dict())
    _check_halving(body, configs[0])
    return configs, parameters


def _check_halving(body: SweepCreate, config: dict[str, Any]) -> None:
    if body.early_stop is not None and body.early_stop.min_epochs > int(config["epochs"]):
        raise invalid(
            "early_stop.min_epochs",
            f"{body.early_stop.min_epochs} is above the trials' epochs ({config['epochs']})",
        )


def _public(state: AppState, record: SweepRecord, *, full: bool = True) -> SweepPublic | SweepSummaryPublic:
    status, summary = sweep_view(state.store, record)
    common: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "dataset_id": record.dataset_id,
        "status": status,
        "metric": record.metric,
        "seeds": record.seeds,
        "n_trials": len(record.trials),
        "counts": summary["counts"],
        "best": summary["best"],
        "alias": record.alias,
        "alias_status": record.alias_status,
        "created_at": record.created_at,
        "finished_at": record.finished_at if record.result is not None else None,
    }
    if not full:
        return SweepSummaryPublic(**common)
    rungs = [
        {"epochs": rung["epochs"], "trials": [trial["index"] for trial in rung["trials"]]} for rung in record.rungs
    ]
    return SweepPublic(
        **common,
        early_stop=record.early_stop,
        spec=record.spec,
        trials=summary["trials"],
        leaderboard=summary["leaderboard"],
        rungs=rungs,
    )


@router.post(
    "",
    status_code=202,
    summary="Start a sweep",
    responses={
        **responses(400, 401, 404, 413, 422, 429, 503),
        202: {
            "description": "Accepted: every child of the first rung is queued.",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "URL of the sweep."}},
            "links": {
                "ReadSweep": {"operationId": "read_sweep", "parameters": {"sweep_id": "$response.body#/id"}},
                "CancelSweep": {"operationId": "cancel_sweep", "parameters": {"sweep_id": "$response.body#/id"}},
            },
        },
    },
)
def create_sweep(body: SweepCreate, response: Response, state: State, caller: Caller) -> SweepPublic:
    """Queue one job per trial and seed; the sweep is accepted whole or refused (429 beyond the per-key queue
    limit). Every option of `base`, `grid` and `random.space` is validated as `POST /v1/jobs` validates it."""
    settings = state.settings
    dataset = state.store.get_dataset(body.dataset_id)
    if dataset is None or not caller.may_see(dataset.owner):
        error = not_found("dataset", body.dataset_id)
        error.details = [{"field": "dataset_id", "message": error.message}]
        raise error
    trials = _trials(body, settings.max_sweep_jobs)
    configs, parameters = _configs(body, trials, state, dataset.n_features, len(dataset.classes))
    n_jobs = len(trials) * len(body.seeds)
    depth = queue_depth(state.redis, queue_name=settings.queue_name)
    if depth + n_jobs > settings.max_queue_depth:
        error = limit_exceeded(503, "queue depth", "max_queue_depth", depth + n_jobs, settings.max_queue_depth)
        error.headers = {"Retry-After": "30"}
        raise error
    sweep_id = new_sweep_id()
    record = SweepRecord(
        id=sweep_id,
        name=body.name or f"sweep-{sweep_id[:8]}",
        owner=caller.owner,
        dataset_id=dataset.id,
        status="queued",
        created_at=utc_now(),
        metric=body.metric,
        seeds=list(body.seeds),
        trials=trials,
        configs=configs,
        launch={
            "queue_name": settings.queue_name,
            "retries": settings.job_retries,
            "timeout_min": settings.job_timeout_min,
            "timeout_max": settings.job_timeout_max,
            "n_samples": dataset.n_samples,
            "n_parameters": parameters,
        },
        rungs=[],
        early_stop=None if body.early_stop is None else body.early_stop.model_dump(),
        alias=body.alias,
        spec=body.model_dump(exclude_none=True),
    )
    try:
        record = submit_sweep(state.store, record, max_queued=settings.max_queued_jobs_per_key)
    except QueueLimitError as exc:
        limit = settings.max_queued_jobs_per_key
        raise limit_exceeded(429, "queued jobs", "max_queued_jobs_per_key", exc.queued + exc.adding, limit) from None
    response.headers["Location"] = f"/v1/sweeps/{record.id}"
    return _public(state, record)  # type: ignore[return-value]


@router.get("", summary="List sweeps", responses=responses(401, 422, 503))
def list_sweeps(state: State, caller: Caller, offset: Offset = 0, limit: Limit = 50) -> SweepList:
    """The caller's sweeps (every sweep for admins), newest first, without their trials."""
    records, total = find_sweeps(state.redis, owner=caller.scope, offset=offset, limit=limit)
    items = [_public(state, record, full=False) for record in records]
    return SweepList(items=items, total=total, offset=offset, limit=limit)


Sweep = Annotated[SweepRecord, Depends(sweep_or_404)]


@router.get("/{sweep_id}", summary="Read a sweep", responses=responses(401, 404, 503))
def read_sweep(record: Sweep, state: State) -> SweepPublic:
    """Status, counts of children by status, every trial with its seeds' jobs and metrics, mean and std, the
    leaderboard and the best trial."""
    return _public(state, record)  # type: ignore[return-value]


@router.post("/{sweep_id}/cancel", summary="Cancel a sweep", responses=responses(401, 404, 409, 503))
def cancel_sweep(record: Sweep, state: State) -> SweepPublic:
    """Queued children never run, running ones stop at their next epoch; no further rung starts."""
    if record.status in ("succeeded", "failed", "canceled"):
        raise ApiError(409, "conflict", f"sweep {record.id!r} is already {record.status}")
    stop_sweep(state.store, record.id, queue_name=state.settings.queue_name)
    updated = get_sweep(state.redis, record.id)
    return _public(state, updated or record)  # type: ignore[return-value]


@router.delete("/{sweep_id}", status_code=204, summary="Delete a sweep", responses=responses(401, 404, 409, 503))
def delete_sweep(record: Sweep, state: State) -> Response:
    """Delete a finished sweep's record; its children (jobs) and their models stay. 409 while it runs."""
    try:
        deleted = remove_sweep(state.store, record.id)
    except SweepNotFinishedError as exc:
        raise ApiError(409, "conflict", f"sweep {record.id!r} is {exc.status}; cancel it and wait for its "
                       "children to end first") from None
    if not deleted:
        raise not_found("sweep", record.id)
    return Response(status_code=204)

