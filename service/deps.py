"""Dependencies of the routes: the app's state (settings, Redis, store, cache, metrics), the caller,
and "this dataset / job / model or 404"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

import engine
from service.auth import KeyRing, Principal, authenticate
from service.errors import ApiError, not_found
from service.metrics import Metrics
from service.model_cache import ModelCache, ModelRecords
from service.settings import Settings
from worker import AmbiguousModelNameError, DatasetRecord, JobRecord, ModelRecord, Store, is_id
from worker.aliases import valid_ref


def make_redis(settings: Settings, *, timeout: float | None = None, retries: int = 1) -> Redis:
    """A Redis client that fails fast: socket timeouts from settings and bounded retries."""
    seconds = settings.redis_timeout if timeout is None else timeout
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=seconds,
        socket_connect_timeout=seconds,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
        health_check_interval=30,
    )


@dataclass
class AppState:
    """Everything a request handler needs, built once by `create_app`."""

    settings: Settings
    redis: Redis
    probe: Redis  # readiness checks: 1 s timeout, no retries
    store: Store
    cache: ModelCache[engine.Model]
    records: ModelRecords
    metrics: Metrics
    keyring: KeyRing


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.backprop
    return state


State = Annotated[AppState, Depends(app_state)]

_bearer = HTTPBearer(auto_error=False, description="An API key from BACKPROP_API_KEYS.")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller; 401 when keys are configured and none (or an unknown one) is sent."""
    state: AppState = request.app.state.backprop  # not the State dependency: one less to solve per request
    return authenticate(request, state.keyring)


Caller = Annotated[Principal, Depends(current_principal)]

Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="How many items to skip.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Most items to return.")]

HISTORY_LIMIT = 1000
"""Epochs of a history an item route shows unless `history_limit` says otherwise."""


@dataclass(frozen=True)
class HistoryWindow:
    """Which epochs of a job's or model's history an item route shows."""

    offset: int
    limit: int


def history_window(
    history_offset: Annotated[
        int, Query(ge=0, le=1_000_000_000, description="Index of the first history entry to return.")
    ] = 0,
    history_limit: Annotated[
        int, Query(ge=1, le=10_000, description="Most history entries to return.")
    ] = HISTORY_LIMIT,
) -> HistoryWindow:
    """The `history_offset`/`history_limit` query parameters of the item routes."""
    return HistoryWindow(history_offset, history_limit)


History = Annotated[HistoryWindow, Depends(history_window)]


def dataset_or_404(dataset_id: str, state: State, caller: Caller) -> DatasetRecord:
    """The caller's dataset (any dataset for admins), else 404 (also for anything that is not an id)."""
    if not is_id(dataset_id):
        raise not_found("dataset", dataset_id)
    record = state.store.get_dataset(dataset_id)
    if record is None or not caller.may_see(record.owner):
        raise not_found("dataset", dataset_id)
    return record


def job_or_404(job_id: str, state: State, caller: Caller) -> JobRecord:
    """The caller's job, else 404 (also for anything that is not an id)."""
    if not is_id(job_id):
        raise not_found("job", job_id)
    record = state.store.get_job(job_id, with_history=False)
    if record is None or not caller.may_see(record.owner):
        raise not_found("job", job_id)
    return record


def is_model_ref(value: str) -> bool:
    """Whether `value` can name a model: an id, a name (the pattern `Name` accepts) or `name@alias`."""
    return is_id(value) or valid_ref(value)


def find_model(state: AppState, caller: Principal, model_id: str) -> ModelRecord:
    """The caller's model by id, or by name, else 404.

    A name means the latest version of a lineage (owner, name), `name@alias` the version its alias points
    at (resolved in Redis on every call, see `Store.resolve_model_id`). A user key resolves its own lineage only.
    An admin (or any caller without authentication) resolves across owners: the latest version when a single
    owner uses the name, else 409 asking for the model id (never a silent pick among owners' models).
    Anything that is neither an id nor a name is a 404 without a Redis call.
    """
    if not is_model_ref(model_id):
        raise not_found("model", model_id)
    try:
        record = state.records.resolve(model_id, owner=caller.scope)
    except AmbiguousModelNameError as exc:
        raise ApiError(
            409,
            "ambiguous_model_name",
            f"model_id: the name {exc.name!r} is used by {exc.owners} owners; give a model id instead",
        ) from None
    if record is None or not caller.may_see(record.owner):
        raise not_found("model", model_id)
    return record


def model_or_404(model_id: str, state: State, caller: Caller) -> ModelRecord:
    """Dependency form of `find_model`."""
    return find_model(state, caller, model_id)
