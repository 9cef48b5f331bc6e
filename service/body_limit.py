"""Request body cap: 413 from Content-Length before reading, and while reading for chunked bodies."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_body


def _too_large(size: int, maximum: int) -> str:
    return f"request body: {size} bytes exceeds the limit max_upload_bytes={maximum}"


class BodyLimitMiddleware:
    """Refuses request bodies larger than `max_bytes` with 413, counting bytes as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    message = _too_large(declared, self.max_bytes)
                    details = [
                        {
                            "field": "body",
                            "limit": "max_upload_bytes",
                            "value": declared,
                            "maximum": self.max_bytes,
                            "message": message,
                        }
                    ]
                    response = JSONResponse(
                        error_body("payload_too_large", message, details),
                        status_code=413,
                        headers={"Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, _too_large(received, self.max_bytes))
            return message

        await self.app(scope, counting_receive, send)
