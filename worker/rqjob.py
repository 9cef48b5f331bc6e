"""The only RQ jobs Backprop runs: its own entry points, whatever a job hash in Redis says."""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job, JobStatus

logger = logging.getLogger(__name__)

# Dotted names of the functions an RQ job may name (the RQ payload carries only ids, JSON-serialised).
ENTRY_POINTS: frozenset[str] = frozenset({"worker.jobs.run_training", "worker.predictions.run_prediction"})


class ForbiddenJobError(RuntimeError):
    """An RQ job that names a function, callback or webhook that is not one of Backprop's own."""


class EntryPointJob(Job):
    """An RQ job that runs only Backprop's entry points, whatever its hash in Redis says.

    The function name is checked before anything is imported. Backprop's jobs have no callbacks and no
    webhooks: a job that names some is refused, and the names are never imported or called.
    """

    def refusal(self) -> str | None:
        """Why this job must not run, or None when it is one of ours."""
        if self.func_name not in ENTRY_POINTS or self.instance is not None:
            return f"refused to run {self.func_name!r}: not one of Backprop's job functions"
        hooks = (self._success_callback_name, self._failure_callback_name, self._stopped_callback_name)
        if any(hooks) or self.webhooks:
            return "refused to run a job with callbacks or webhooks: Backprop's jobs have none"
        return None

    def perform(self) -> Any:
        refusal = self.refusal()
        if refusal is not None:
            self.retries_left = None  # a forged job is not retried either
            logger.error("RQ job %s: %s", self.id, refusal)
            raise ForbiddenJobError(refusal)
        return super().perform()

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: str | JobStatus, *, exc_string: str | None = None) -> None:
        return None
