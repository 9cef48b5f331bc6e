"""Request bodies: a byte cap answered 413 before reading (Content-Length) or while reading (chunked), with
its own, lower cap for JSON bodies; and JSON bodies validated off the event loop."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
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


_DOCUMENTED: dict[str, type[BaseModel]] = {}


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its body with `read_json`: the body is `model`'s component."""
    _DOCUMENTED[model.__name__] = model
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": reference}}}}


def add_json_body_schemas(app: FastAPI) -> None:
    """Put the models of `json_request_body` routes among the OpenAPI document's component schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().setdefault("components", {}).setdefault("schemas", {})
            for name, model in _DOCUMENTED.items():
                schemas.setdefault(name, model.model_json_schema(ref_template="#/components/schemas/{model}"))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


async def read_json(request: Request, model: type[Body]) -> Body:
    """The request's JSON body validated as `model`; 422 like FastAPI's own body validation otherwise.

    Small bodies are validated on the event loop. Larger ones in the thread pool, and in pieces
    (`_decode_object`, `_validate_in_chunks`): parsing holds the GIL, so one call over a 50 MB body would
    stall the event loop's thread just as surely as running it there.
    """
    body = await request.body()
    try:
        if len(body) <= INLINE_JSON_BYTES:
            return model.model_validate_json(body)
        return await run_in_threadpool(_validate_large, model, body)
    except ValidationError as exc:
        raise _body_errors(exc.errors(include_url=False)) from None


def _body_errors(errors: Sequence[Mapping[str, Any]]) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors])


def _validate_large(model: type[Body], body: bytes) -> Body:
    try:
        parsed = _decode_object(body.decode("utf-8"))
    except UnicodeDecodeError:
        parsed = None
    if parsed is None:  # not a plain JSON object: the model's own parser names the problem
        return model.model_validate_json(body)
    return _validate_in_chunks(model, parsed)


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_CHUNK_ITEMS = 4096


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _skip(text: str, index: int) -> int:
    return _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]


def _decode_object(text: str) -> dict[str, Any] | None:
    """A top-level JSON object whose array values are decoded one element at a time (so other threads get
    the GIL between elements), or None when the text is anything else."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    result: dict[str, Any] = {}
    try:
        index = _skip(text, 0)
        if text[index] != "{":
            return None
        index = _skip(text, index + 1)
        while text[index] != "}":
            key, index = decoder.raw_decode(text, index)
            index = _skip(text, index)
            if not isinstance(key, str) or text[index] != ":":
                return None
            index = _skip(text, index + 1)
            if text[index] == "[":
                result[key], index = _decode_array(decoder, text, index)
            else:
                result[key], index = decoder.raw_decode(text, index)
            index = _skip(text, index)
            if text[index] == ",":
                index = _skip(text, index + 1)
            elif text[index] != "}":
                return None
    except (ValueError, IndexError):
        return None
    return result if _skip(text, index + 1) == len(text) else None


def _decode_array(decoder: json.JSONDecoder, text: str, index: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    index = _skip(text, index + 1)
    while text[index] != "]":
        item, index = decoder.raw_decode(text, index)
        items.append(item)
        index = _skip(text, index)
        if text[index] == ",":
            index = _skip(text, index + 1)
        elif text[index] != "]":
            raise ValueError("expected , or ]")
    return items, index + 1


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _validate_in_chunks(model: type[Body], data: dict[str, Any]) -> Body:
    """`model.model_validate(data)`, with its long list fields validated a few thousand items at a time."""
    long = {
        name: value
        for name, value in data.items()
        if name in model.model_fields
        and isinstance(value, list)
        and len(value) > _CHUNK_ITEMS
        and all(type(rule).__name__ == "MinLen" for rule in model.model_fields[name].metadata)
    }
    errors: list[Mapping[str, Any]] = []
    head: Body | None = None
    try:  # every other field, and the long ones' shape, on their first item
        head = model.model_validate({**data, **{name: value[:1] for name, value in long.items()}})
    except ValidationError as exc:
        errors += [e for e in exc.errors(include_url=False) if not (e["loc"][0] in long and len(e["loc"]) > 1)]
    validated: dict[str, list[Any]] = {}
    for name, values in long.items():
        adapter = _adapter(model.model_fields[name].annotation)  # type: ignore[arg-type]
        validated[name] = []
        for start in range(0, len(values), _CHUNK_ITEMS):
            try:
                validated[name] += adapter.validate_python(values[start : start + _CHUNK_ITEMS])
            except ValidationError as exc:
                errors += [
                    {**e, "loc": (name, start + int(e["loc"][0]), *e["loc"][1:])} for e in exc.errors(include_url=False)
                ]
    if errors or head is None:
        raise _body_errors(errors)
    return head.model_copy(update=validated)
