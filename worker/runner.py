"""The worker process: NumPy, the engine and the job module are imported here, once, before RQ forks."""

from __future__ import annotations

import encodings.cp437  # noqa: F401 - preloaded: zipfile decodes .npz member names with it, in every job
import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy.random  # noqa: F401 - preloaded with NumPy, which imports it lazily: ~8 ms in every work-horse
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import Worker

import engine  # noqa: F401 - preloaded for every work-horse
import worker.jobs
import worker.predictions  # noqa: F401 - preloaded: `worker.predictions.run_prediction`, likewise
from worker.attempts import Attempts
from worker.blobs import BlobConfig
from worker.jobstate import JobStatus
from worker.queue import rq_queue
from worker.receipts import environment
from worker.rqjob import EntryPointJob
from worker.runtime import blob_store, configure, pin_blas_threads

logger = logging.getLogger(__name__)

_HOLD_BACK_PAUSE = 0.5


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


class TrainingWorker(Worker):
    """RQ's forking worker, holding back the jobs of an owner already running `running_limit` jobs (0: none).

    A held-back job goes to the end of the queue, so other owners' jobs run first and no worker waits on it.
    """

    running_limit = 0

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.running_limit > 0 and not Attempts(self.connection).admit(job.id, running_limit=self.running_limit):
            with self.connection.pipeline() as pipe:  # dequeuing parked the id in RQ's intermediate list
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
                pipe.rpush(queue.key, job.id)
                pipe.execute()
            logger.info("job %s: its owner runs %d jobs already; back to the queue", job.id, self.running_limit)
            time.sleep(_HOLD_BACK_PAUSE)  # when only held-back jobs wait, do not spin on them
            return
        super().execute_job(job, queue)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """The work-horse: RQ's, with the objects inherited from the worker left out of garbage collection."""
        # The horse shares the worker's memory until it writes to a page; a full collection writes to every
        # object it visits (about 50 ms of page copies for the imported modules, measured), and what the
        # worker made before the fork lives as long as the horse anyway.
        gc.freeze()
        super().main_work_horse(job, queue)


def build_worker(
    connection: Redis,
    *,
    queue_name: str,
    worker_ttl: int = 60,
    job_monitoring_interval: int = 10,
    name: str | None = None,
    running_limit: int = 0,
) -> Worker:
    """A forking RQ worker on the training queue, JSON serializer, running only EntryPointJobs, with our
    work-horse-killed handler."""
    queue = rq_queue(connection, queue_name)
    rq_worker = TrainingWorker(
        [queue],
        connection=connection,
        serializer=JSONSerializer,
        job_class=EntryPointJob,
        name=name,
        worker_ttl=worker_ttl,
        job_monitoring_interval=job_monitoring_interval,
        work_horse_killed_handler=_horse_killed,
    )
    rq_worker.running_limit = running_limit
    return rq_worker


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
    running_limit: int = 0,
    blas_threads: int = 0,
    temp_min_age: float = 3600.0,
) -> None:
    """Configure this process and run an RQ worker until stopped (with `burst`: until the queue is empty).

    `blobs` is a BlobConfig or a blob directory. `running_limit` > 0: an owner's jobs beyond that many running
    wait in the queue. `blas_threads` > 0: the work-horses' BLAS thread pools are limited to that many threads
    (0: the BLAS default); each job records the count in effect. Temp files that killed writes left on this
    host and that are older than `temp_min_age` seconds are deleted at start.
    """
    configure(
        blobs,
        checkpoint_seconds=checkpoint_seconds,
        progress_min_interval=progress_min_interval,
        job_monitoring_interval=job_monitoring_interval,
        blob_retry_seconds=blob_retry_seconds,
        blas_threads=pin_blas_threads(blas_threads),
    )
    connection = Redis.from_url(redis_url)
    rq_worker = build_worker(
        connection,
        queue_name=queue_name,
        worker_ttl=worker_ttl,
        job_monitoring_interval=job_monitoring_interval,
        name=name,
        running_limit=running_limit,
    )
    store = blob_store().description  # opened before RQ forks: every work-horse inherits it
    try:
        removed = blob_store().remove_local_temp_files(temp_min_age)
    except OSError as exc:
        logger.warning("stale temp files not removed: %s", exc)
    else:
        if removed:
            logger.info("removed %d stale temp file(s) of killed writes: %s", len(removed), ", ".join(removed))
    environment()  # likewise the receipts' look at the loaded libraries
    logger.info("worker %s listening on queue %s (blobs in %s)", rq_worker.name, queue_name, store)
    rq_worker.work(burst=burst, with_scheduler=False)
