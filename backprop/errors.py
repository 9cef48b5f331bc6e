"""The client's exceptions: the server's error body `{"error": {"code", "message", "details"}}` as Python."""

from __future__ import annotations

from typing import Any


class BackpropError(Exception):
    """An error answered by the server (or the lack of an answer): its `code`, `message` and HTTP `status`
    (None when no response came)."""

    def __init__(
        self, code: str, message: str, status: int | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status is not None else f"{message} ({code})")
        self.code = code
        self.message = message
        self.status = status
        self.details = details or []


class NotFound(BackpropError):
    """404: no such dataset, job or model (or not yours)."""


class Unauthorized(BackpropError):
    """401: no API key, or an unknown one."""


class Forbidden(BackpropError):
    """403: the key may not do this."""


class InvalidRequest(BackpropError):
    """400/413/415/422: the request itself is wrong; `details` names the fields."""


class Conflict(BackpropError):
    """409: the object is in a state that forbids this (e.g. canceling a finished job)."""


class RateLimited(BackpropError):
    """429: a limit of the key was reached; `retry_after` in seconds when the server said."""

    retry_after: float | None = None


class Unavailable(BackpropError):
    """503, or the server could not be reached."""


class JobFailed(BackpropError):
    """The job ended `failed`; `message` is the server's reason, `job` the final record."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__("job_failed", str(job.get("error") or "the job failed"))
        self.job = job


class JobCanceled(BackpropError):
    """The job ended `canceled`; `job` is the final record."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__("job_canceled", f"job {job.get('id')!r} was canceled")
        self.job = job


_BY_STATUS: dict[int, type[BackpropError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def error_from_response(status: int, body: Any, headers: dict[str, str]) -> BackpropError:
    """The exception for an error response: the server's code, message and details when the body has them."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        message = str(error.get("message") or f"HTTP {status}")
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    else:
        code, message, details = "http_error", f"HTTP {status}", []
    kind = _BY_STATUS.get(status, BackpropError)
    exc = kind(code, message, status, details)
    if isinstance(exc, RateLimited):
        try:
            exc.retry_after = float(headers.get("retry-after", ""))
        except ValueError:
            exc.retry_after = None
    return exc
