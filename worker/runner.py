"""The worker process: NumPy, the engine and the job module are imported here, once, before RQ forks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - preloaded for every work-horse
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import Worker

import engine  # noqa: F401 - preloaded for every work-horse
import worker.jobs  # noqa: F401 - preloaded: the work-horse resolves `worker.jobs.run_training` from here
from worker.attempts import Attempts
from worker.blobs import BlobConfig
from worker.queue import rq_queue
from worker.records import utc_now
from worker.runtime import blob_store, configure

logger = logging.getLogger(__name__)


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
    """A forking RQ worker on the training queue, JSON serializer, with our work-horse-killed handler."""
    return Worker(
        [rq_queue(connection, queue_name)],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        worker_ttl=worker_ttl,
        job_monitoring_interval=job_monitoring_interval,
        work_horse_killed_handler=_horse_killed,
    )


def run_worker(
    redis_url: str,
    *,
    queue_name: str,
    blobs: BlobConfig | Path,
    burst: bool = False,
    worker_ttl: int = 60,
    job_monitoring_interval: int = 10,
    checkpoint_seconds: float = 10.0,
    name: str | None = None,
    progress_min_interval: float = 0.2,
    blob_retry_seconds: float = 30.0,
) -> None:
    """Configure this process and run an RQ worker until stopped (with `burst`: until the queue is empty).

    `blobs` is a BlobConfig or a blob directory."""
    configure(
        blobs,
        checkpoint_seconds=checkpoint_seconds,
        progress_min_interval=progress_min_interval,
        job_monitoring_interval=job_monitoring_interval,
        blob_retry_seconds=blob_retry_seconds,
    )
    connection = Redis.from_url(redis_url)
    rq_worker = build_worker(
        connection,
        queue_name=queue_name,
        worker_ttl=worker_ttl,
        job_monitoring_interval=job_monitoring_interval,
        name=name,
    )
    store = blob_store().description  # opened before RQ forks: every work-horse inherits it
    logger.info("worker %s listening on queue %s (blobs in %s)", rq_worker.name, queue_name, store)
    rq_worker.work(burst=burst, with_scheduler=False)
