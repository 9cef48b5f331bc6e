"""The RQ side of Backprop: the store of datasets, jobs and models, the queue, and the training job."""

from __future__ import annotations

from worker import keys
from worker.blobs import (
    BlobConfig,
    BlobConfigError,
    BlobError,
    BlobInfo,
    BlobStore,
    BlobStoreUnavailableError,
    StorageFullError,
    open_blob_store,
)
from worker.checkpoints import checkpoint_failures
from worker.jobstate import ACTIVE_STATUSES, JOB_STATUSES, TERMINAL_STATUSES, TRANSITIONS, JobStatus
from worker.progress import eta_seconds, subscribe_job_events
from worker.queue import (
    cancel_job,
    enqueue_training,
    job_timeout,
    queue_depth,
    queue_position,
    reap,
    workers_alive,
)
from worker.records import DatasetRecord, JobRecord, ModelRecord
from worker.runner import run_worker
from worker.runtime import WorkerConfig, configure
from worker.store import (
    ID_PATTERN,
    AmbiguousModelNameError,
    JobNotFinishedError,
    NotFoundError,
    QueueLimitError,
    Store,
    is_id,
)

__all__ = [
    "ACTIVE_STATUSES",
    "ID_PATTERN",
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "AmbiguousModelNameError",
    "BlobConfig",
    "BlobConfigError",
    "BlobError",
    "BlobInfo",
    "BlobStore",
    "BlobStoreUnavailableError",
    "DatasetRecord",
    "JobNotFinishedError",
    "JobRecord",
    "JobStatus",
    "ModelRecord",
    "NotFoundError",
    "QueueLimitError",
    "StorageFullError",
    "Store",
    "WorkerConfig",
    "cancel_job",
    "checkpoint_failures",
    "configure",
    "enqueue_training",
    "eta_seconds",
    "is_id",
    "job_timeout",
    "keys",
    "open_blob_store",
    "queue_depth",
    "queue_position",
    "reap",
    "run_worker",
    "subscribe_job_events",
    "workers_alive",
]
