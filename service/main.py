"""The FastAPI application: `create_app()` wires settings, Redis, the store, routes and middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from service.auth import KeyRing
from service.body_limit import BodyLimitMiddleware, add_json_body_schemas
from service.dashboard import mount_dashboard
from service.deps import AppState, Caller, make_redis
from service.errors import install_error_handlers
from service.logs import AccessLogMiddleware, configure_logging
from service.metrics import Metrics, store_snapshot
from service.model_cache import ModelCache, ModelRecords, model_nbytes
from service.routes import (
    aliases,
    datasets,
    evaluations,
    events,
    health,
    jobs,
    metrics,
    models,
    predictions,
    sweeps,
    v2,
)
from service.settings import Settings, get_settings
from worker import Store, advance_sweeps, open_blob_store, reap, sweep_orphans

logger = logging.getLogger(__name__)

FIRST_ORPHAN_SWEEP_DELAY = 1.0
"""Seconds after start-up before the first orphan sweep (it runs in a thread: readiness does not wait)."""

DESCRIPTION = """
Train neural-network classifiers on your datasets and serve their predictions.

1. `POST /v1/datasets` a CSV (header row; labels in the last column or `label_column`), an NPZ (`X`, `y`)
   or JSON `{"features": [[...]], "labels": [...]}`.
2. `POST /v1/jobs` with the dataset id and hyperparameters; poll `GET /v1/jobs/{id}` until `succeeded`.
3. `POST /v1/models/{model_id or name}/predict` with `{"instances": [[...]]}`.

Errors share one shape: `{"error": {"code", "message", "details"}}`. When API keys are configured, send
`Authorization: Bearer <key>`.
"""


async def _reap_forever(state: AppState) -> None:
    """Registry cleanup every `reaper_interval` seconds; errors are logged, never fatal."""
    settings = state.settings
    while True:
        await asyncio.sleep(settings.reaper_interval)
        try:
            changed = await run_in_threadpool(
                reap,
                state.redis,
                state.store,
                queue_name=settings.queue_name,
                job_retention_seconds=settings.job_retention_days * 86400,
            )
            if changed:
                logger.info("reaper: %d job(s) re-queued or failed", changed)
            await run_in_threadpool(advance_sweeps, state.store)
        except Exception as exc:
            logger.warning("reaper failed: %s: %s", type(exc).__name__, exc)


async def _sweep_orphans_forever(state: AppState) -> None:
    """The orphan sweep shortly after start-up, then every `orphan_sweep_interval` seconds, in a thread;
    errors are logged, never fatal."""
    settings = state.settings
    delay = FIRST_ORPHAN_SWEEP_DELAY
    while True:
        await asyncio.sleep(delay)
        delay = settings.orphan_sweep_interval
        try:
            report = await run_in_threadpool(
                sweep_orphans, state.redis, state.store.blobs, min_age_seconds=settings.orphan_min_age
            )
        except Exception as exc:
            logger.warning("orphan sweep failed: %s: %s", type(exc).__name__, exc)
            continue
        if report.deleted:
            logger.info("orphan sweep: deleted %s; kept %d blobs", report.deleted, report.kept)


def published_openapi(build: Callable[[], dict[str, Any]], *, keys: bool, metrics_public: bool) -> dict[str, Any]:
    """The OpenAPI document as this server enforces it: without API keys no operation requires the bearer
    scheme (and the scheme is not published); with keys, /metrics requires it too unless it is public."""
    schema = build()
    bearer: list[dict[str, list[str]]] = [{"HTTPBearer": []}]
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if not keys:  # nobody is refused for want of a key, or for its role
                operation.pop("security", None)
                for status in ("401", "403"):
                    operation.get("responses", {}).pop(status, None)
            elif path == "/metrics" and not metrics_public:
                operation["security"] = bearer
    if not keys:
        components = schema.get("components", {})
        components.pop("securitySchemes", None)
    return schema


def _lifespan(state: AppState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup and shutdown: the open-access warning, the reaper and orphan-sweep tasks, then closing both Redis
    clients."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not state.keyring.enabled:
            logger.warning("no API keys configured (BACKPROP_API_KEYS): every caller is an admin")
        tasks = [asyncio.create_task(_reap_forever(state))]
        if state.settings.orphan_sweep_interval > 0:
            tasks.append(asyncio.create_task(_sweep_orphans_forever(state)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            state.redis.close()
            state.probe.close()

    return lifespan


def _serve_openapi(app: FastAPI, state: AppState, *, open_docs: bool) -> None:
    """Publish the OpenAPI document as the server enforces it; without open docs, serve it and the Swagger
    UI behind authentication instead of FastAPI's open routes."""
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = published_openapi(
                build_openapi, keys=state.keyring.enabled, metrics_public=state.settings.metrics_public
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if not open_docs:

        @app.get("/openapi.json", include_in_schema=False)
        def read_openapi(caller: Caller) -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False)
        def read_docs(caller: Caller) -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="Backprop API")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The Backprop API; with no argument it reads `get_settings()` (uvicorn's `--factory`)."""
    settings = settings if settings is not None else get_settings()
    configure_logging(settings.log_format, settings.log_level)
    client = make_redis(settings)
    probe = make_redis(settings, timeout=min(1.0, settings.redis_timeout), retries=0)
    store = Store(client, open_blob_store(settings.blob_config()))
    state = AppState(
        settings=settings,
        redis=client,
        probe=probe,
        store=store,
        cache=ModelCache(settings.model_cache_size, settings.model_cache_bytes, model_nbytes),
        records=ModelRecords(store),
        metrics=Metrics(lambda: store_snapshot(probe, store, queue_name=settings.queue_name)),
        keyring=KeyRing(settings.parsed_api_keys()),
    )

    # With API keys configured, the API's own description needs a key too (only /healthz, /readyz and, when
    # settings say so, /metrics are open): FastAPI's open routes are replaced by authenticated ones.
    open_docs = not state.keyring.enabled
    app = FastAPI(
        title="Backprop",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=_lifespan(state),
        generate_unique_id_function=lambda route: route.name,  # operationId = handler name
        openapi_url="/openapi.json" if open_docs else None,
        docs_url="/docs" if open_docs else None,
        redoc_url="/redoc" if open_docs else None,
    )
    app.state.backprop = state
    _serve_openapi(app, state, open_docs=open_docs)
    add_json_body_schemas(app)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, max_json_bytes=settings.max_json_bytes)
    responses_by_status = state.metrics.http_responses
    app.add_middleware(AccessLogMiddleware, on_response=lambda status: responses_by_status.labels(str(status)).inc())
    for router in (
        datasets.router,
        jobs.router,
        sweeps.router,
        models.router,
        aliases.router,
        evaluations.router,
        health.router,
        metrics.router,
    ):
        app.include_router(router)
    app.include_router(v2.router)
    app.include_router(events.router)
    app.include_router(predictions.router)
    mount_dashboard(app)
    return app
