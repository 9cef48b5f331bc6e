"""Log records of a job carry its id: in the message and as the `job_id` attribute (for JSON logs)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that prefixes `job <id>:` and sets `extra={"job_id": id}`."""

    def __init__(self, logger: logging.Logger, job_id: str) -> None:
        super().__init__(logger, {"job_id": job_id})
        self.job_id = job_id

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "job_id": self.job_id}
        return f"job {self.job_id}: {msg}", kwargs


def job_logger(name: str, job_id: str) -> JobLogger:
    """`logging.getLogger(name)` bound to one job."""
    return JobLogger(logging.getLogger(name), job_id)
