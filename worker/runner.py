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
from worker.jobstate import JobStatus
from worker.queue import rq_queue
from worker.runtime import configure

logger = logging.getLogger(__name__)


def _horse_killed(job: Job, retpid: int | None, ret_val: int | None, rusage: Any) -> None:
    """RQ calls this in the worker when a work-horse died: reflect it in our job record at once."""
    signal_text = (
        f"signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else f"status {ret_val}"
    )
    reason = f"the worker process died ({signal_text}) and no retries are left"
    outcome = Attempts(job.connection).requeue_or_fail(job.id, requeue=bool(job.retries_left), reason=reason)
    if outcome is JobStatus.QUEUED:
        logger.warning("job %s: work-horse died (%s); re-queued to resume from its checkpoint", job.id, signal_text)
    elif outcome is JobStatus.FAILED:
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
