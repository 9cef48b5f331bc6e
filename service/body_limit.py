"""Request bodies: a byte cap answered 413 before reading (Content-Length) or while reading (chunked), with
its own, lower cap for JSON bodies; and JSON bodies validated off the event loop."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_body

Body = TypeVar("Body", bound=BaseModel)

INLINE_JSON_BYTES = 64 * 1024
"""JSON bodies up to this size are validated on the event loop (cheaper than a thread hop); larger ones in
the thread pool, so a big body never stalls other requests."""


def _too_large(size: int, limit: str, maximum: int) -> str:
    return f"request body: {size} bytes exceeds the limit {limit}={maximum}"


def is_json(media_type: str) -> bool:
    """Whether a Content-Type (without parameters) is JSON."""
    return media_type == "application/json" or media_type.endswith("+json")


def _media_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return str(value.decode("latin-1")).split(";")[0].strip().lower()
    return ""


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class BodyLimitMiddleware:
    """Refuses request bodies larger than `max_bytes` (JSON bodies: the lower of it and `max_json_bytes`) with
    413, counting bytes as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_bytes if max_json_bytes is None else max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if is_json(_media_type(scope)) and self.max_json_bytes < self.max_bytes:
            limit, maximum = "max_json_bytes", self.max_json_bytes
        else:
            limit, maximum = "max_upload_bytes", self.max_bytes
        declared = _declared_length(scope)
        if declared > maximum:
            message = _too_large(declared, limit, maximum)
            details = [{"field": "body", "limit": limit, "value": declared, "maximum": maximum, "message": message}]
            response = JSONResponse(
                error_body("payload_too_large", message, details), status_code=413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > maximum:
                    raise HTTPException(413, _too_large(received, limit, maximum))
            return message

        await self.app(scope, counting_receive, send)


async def read_json(request: Request, model: type[Body]) -> Body:
    """The request's JSON body validated as `model`, parsed off the event loop when large; 422 like FastAPI's
    own body validation otherwise."""
    body = await request.body()
    try:
        if len(body) <= INLINE_JSON_BYTES:
            return model.model_validate_json(body)
        return await run_in_threadpool(model.model_validate_json, body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
