"""One JSON error shape for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.schemas import ErrorPublic
from worker import BlobStoreUnavailableError, QuotaExceededError, StorageFullError

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
    507: "insufficient_storage",
}


class ApiError(Exception):
    """An error the client should see, with its HTTP status."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = headers


def not_found(kind: str, ident: str) -> ApiError:
    """404 for an id that does not exist or is not the caller's."""
    return ApiError(404, "not_found", f"{kind} {ident!r} not found")


def invalid(field: str, message: str, *, code: str = "validation_error", **extra: Any) -> ApiError:
    """422 naming the field (a dotted path such as `hidden_layers[0]`)."""
    return ApiError(422, code, f"{field}: {message}", details=[{"field": field, "message": message, **extra}])


def limit_exceeded(status_code: int, field: str, limit: str, value: int, maximum: int) -> ApiError:
    """A resource limit (OWASP API4) with the limit's name, the value received and the maximum."""
    message = f"{field}: {value} exceeds the limit {limit}={maximum}"
    return ApiError(
        status_code,
        "limit_exceeded",
        message,
        details=[{"field": field, "limit": limit, "value": value, "maximum": maximum, "message": message}],
    )


_QUOTAS = {
    "bytes": ("stored bytes", "max_stored_bytes_per_key"),
    "datasets": ("datasets", "max_datasets_per_key"),
    "models": ("models", "max_models_per_key"),
}


def quota_exceeded(exc: QuotaExceededError) -> ApiError:
    """429 for a per-key storage quota, naming it; deleting datasets or models makes room again."""
    field, limit = _QUOTAS[exc.resource]
    error = limit_exceeded(429, field, limit, exc.value, exc.maximum)
    hint = "; delete datasets or models of this API key to make room"
    error.message += hint
    error.details[0]["message"] += hint
    return error


def error_body(code: str, message: str, details: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": list(details)}}


def field_path(loc: Sequence[int | str]) -> str:
    """("body", "hidden_layers", 0) -> "hidden_layers[0]"; query/path parameters keep their source."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        details.append(
            {
                "field": field_path(loc),
                "location": str(loc[0]) if loc else "body",
                "message": str(error.get("msg", "invalid value")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return details


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_code=exc.status_code, headers=exc.headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]) or "invalid request"
    if len(details) > 5:
        message += f"; and {len(details) - 5} more"
    return JSONResponse(error_body("validation_error", message, details), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method of every route matching the path (Starlette's own Allow names one route only)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("redis unavailable during %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse(
        error_body("redis_unavailable", "the job store (Redis) is unavailable; retry shortly"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _storage_full(request: Request, exc: Exception) -> JSONResponse:
    logger.error("disk full during %s %s: %s", request.method, request.url.path, exc)
    message = "the server's disk is full: nothing was stored; retry later (an operator must free space)"
    return JSONResponse(error_body("insufficient_storage", message), status_code=507)


async def _blob_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BlobStoreUnavailableError)
    logger.warning("blob store unavailable during %s %s: %s", request.method, request.url.path, exc.reason)
    message = f"the blob store ({exc.store}) is unavailable; retry shortly"
    return JSONResponse(error_body("blob_store_unavailable", message), status_code=503, headers={"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error during %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(redis.RedisError, _redis_error)
    app.add_exception_handler(StorageFullError, _storage_full)
    app.add_exception_handler(BlobStoreUnavailableError, _blob_store_unavailable)
    app.add_exception_handler(Exception, _unexpected)


_DESCRIPTIONS = {
    400: "Malformed request (e.g. an unreadable multipart body).",
    401: "Missing or unknown API key (when keys are configured).",
    403: "The API key's role does not allow this action.",
    404: "No such resource, or it belongs to another API key.",
    409: (
        "The resource is not in a state that allows this action, "
        "or a model name is used by several owners (give the model id)."
    ),
    413: "The request body exceeds max_upload_bytes.",
    415: "Unsupported Content-Type.",
    422: "Invalid input; the message names the field (or the row and column of a CSV).",
    429: (
        "A per-key limit is reached: queued jobs (max_queued_jobs_per_key), or a storage quota "
        "(max_stored_bytes_per_key, max_datasets_per_key, max_models_per_key)."
    ),
    503: "Redis or the blob store is unavailable, or the queue is full (max_queue_depth).",
    507: "The server's disk is full: nothing was stored.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of a route's error responses (all with the `ErrorPublic` shape)."""
    return {code: {"model": ErrorPublic, "description": _DESCRIPTIONS[code]} for code in codes}
