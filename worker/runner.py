"""The worker process: NumPy, the engine and the job module are imported here, once, before RQ forks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - preloaded for every work-horse
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.worker import Worker

import engine  # noqa: F401 - preloaded for every work-horse
import worker.jobs  # noqa: F401 - preloaded: the work-horse resolves `worker.jobs.run_training` from here
from worker.attempts import Attempts
from worker.jobs import ENTRY_POINTS
from worker.queue import rq_queue
from worker.records import utc_now
from worker.runtime import configure

logger = logging.getLogger(__name__)


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


def _horse_killed(job: Job, retpid: int | None, ret_val: int | None, rusage: Any) -> None:
    """RQ calls this in the worker when a work-horse died: reflect it in our job record at once."""
    signal_text = (
        f"signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else f"status {ret_val}"
    )
    attempts = Attempts(job.connection)
    if job.retries_left:
        if attempts.transition(job.id, allowed=("running", "stalled"), fields={"status": "queued"}):
            logger.warning(
                "job %s: work-horse died (%s); re-queued to resume from its checkpoint", job.id, signal_text
            )
        return
    reason = f"the worker process died ({signal_text}) and no retries are left"
    if attempts.transition(
        job.id,
        allowed=("running", "stalled"),
        fields={"status": "failed", "error": reason, "finished_at": utc_now()},
        bump_fence=True,
    ):
        logger.error("job %s failed: %s", job.id, reason)


def build_worker(
    connection: Redis,
    *,
    queue_name: str,
    worker_ttl: int = 60,
    job_monitoring_interval: int = 10,
    name: str | None = None,
) -> Worker:
    """A forking RQ worker on the training queue, JSON serializer, running only EntryPointJobs, with our
    work-horse-killed handler."""
    queue = rq_queue(connection, queue_name)
    queue.job_class = EntryPointJob  # its registries' clean-ups fetch jobs as EntryPointJobs too
    return Worker(
        [queue],
        connection=connection,
        serializer=JSONSerializer,
        job_class=EntryPointJob,
        name=name,
        worker_ttl=worker_ttl,
        job_monitoring_interval=job_monitoring_interval,
        work_horse_killed_handler=_horse_killed,
    )


def run_worker(
    redis_url: str,
    *,
    queue_name: str,
    blob_dir: Path,
    burst: bool = False,
    worker_ttl: int = 60,
    job_monitoring_interval: int = 10,
    checkpoint_seconds: float = 10.0,
    name: str | None = None,
    progress_min_interval: float = 0.2,
) -> None:
    """Configure this process and run an RQ worker until stopped (with `burst`: until the queue is empty)."""
    configure(
        blob_dir,
        checkpoint_seconds=checkpoint_seconds,
        progress_min_interval=progress_min_interval,
        job_monitoring_interval=job_monitoring_interval,
    )
    connection = Redis.from_url(redis_url)
    rq_worker = build_worker(
        connection,
        queue_name=queue_name,
        worker_ttl=worker_ttl,
        job_monitoring_interval=job_monitoring_interval,
        name=name,
    )
    logger.info("worker %s listening on queue %s (blobs in %s)", rq_worker.name, queue_name, blob_dir)
    rq_worker.work(burst=burst, with_scheduler=False)
