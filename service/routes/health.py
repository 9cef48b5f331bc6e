"""/healthz (the process is up) and /readyz (Redis answers within 1 s and a worker is alive)."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import State
from service.schemas import HealthPublic, ReadinessPublic
from worker import workers_alive

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
def healthz() -> HealthPublic:
    """200 while the process is up."""
    return HealthPublic()


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=ReadinessPublic,
    responses={
        503: {"model": ReadinessPublic, "description": "Redis does not answer or no worker is alive."}
    },
)
def readyz(state: State) -> JSONResponse:
    """200 when Redis answers within 1 s and at least one worker is alive, else 503."""
    redis_ok = False
    workers = 0
    try:
        redis_ok = bool(state.probe.ping())
        workers = workers_alive(state.probe, queue_name=state.settings.queue_name)
    except redis.RedisError as exc:
        logger.warning("readiness: Redis error %s", type(exc).__name__)
    ready = redis_ok and workers >= 1
    body = ReadinessPublic(status="ready" if ready else "unavailable", redis=redis_ok, workers=workers)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
