"""The RQ side of Backprop: the store of datasets, jobs and models, the queue, and the training job."""

from __future__ import annotations

from pathlib import Path

from worker import keys
from worker.blobs import BlobError
from worker.queue import (
    cancel_job,
    enqueue_training,
    job_timeout,
    queue_depth,
    queue_position,
    reap,
    workers_alive,
)
from worker.records import JOB_STATUSES, TERMINAL_STATUSES, DatasetRecord, JobRecord, ModelRecord
from worker.runtime import WorkerConfig, configure
from worker.store import NotFoundError, Store


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
    """Run an RQ worker on `queue_name` until stopped (with `burst`: until the queue is empty)."""
    # Imported here so the API does not load the worker runtime; the runner imports NumPy, the engine
    # and the job module at its top, once, before RQ forks any work-horse.
    from worker.runner import run_worker as run

    run(
        redis_url,
        queue_name=queue_name,
        blob_dir=blob_dir,
        burst=burst,
        worker_ttl=worker_ttl,
        job_monitoring_interval=job_monitoring_interval,
        checkpoint_seconds=checkpoint_seconds,
        name=name,
        progress_min_interval=progress_min_interval,
    )


__all__ = [
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "BlobError",
    "DatasetRecord",
    "JobRecord",
    "ModelRecord",
    "NotFoundError",
    "Store",
    "WorkerConfig",
    "cancel_job",
    "configure",
    "enqueue_training",
    "job_timeout",
    "keys",
    "queue_depth",
    "queue_position",
    "reap",
    "run_worker",
    "workers_alive",
]
