"""The RQ side of Backprop: the store of datasets, jobs and models, the queue, and the training job."""

from __future__ import annotations

from worker import keys, npyfiles
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
from worker.orphans import SweepReport, orphans_deleted, sweep_orphans
from worker.predictions import (
    PredictionRecord,
    Predictions,
    cancel_prediction,
    enqueue_prediction,
    open_input,
    open_result,
    reconcile_prediction,
)
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
from worker.records import DatasetRecord, JobRecord, ModelRecord, utc_now
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
from worker.sweep_results import grid_trials, random_trials
from worker.sweeps import (
    SweepNotFinishedError,
    SweepRecord,
    advance_sweeps,
    cancel_sweep,
    create_sweep,
    delete_sweep,
    get_sweep,
    list_sweeps,
    new_sweep_id,
    sweep_view,
)
from worker.usage import Quota, QuotaExceededError, Usage

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
    "PredictionRecord",
    "Predictions",
    "QueueLimitError",
    "Quota",
    "QuotaExceededError",
    "StorageFullError",
    "Store",
    "SweepNotFinishedError",
    "SweepRecord",
    "SweepReport",
    "Usage",
    "WorkerConfig",
    "advance_sweeps",
    "cancel_job",
    "cancel_prediction",
    "cancel_sweep",
    "checkpoint_failures",
    "configure",
    "create_sweep",
    "delete_sweep",
    "enqueue_prediction",
    "enqueue_training",
    "eta_seconds",
    "get_sweep",
    "grid_trials",
    "is_id",
    "job_timeout",
    "keys",
    "list_sweeps",
    "new_sweep_id",
    "npyfiles",
    "open_blob_store",
    "open_input",
    "open_result",
    "orphans_deleted",
    "queue_depth",
    "queue_position",
    "random_trials",
    "reap",
    "reconcile_prediction",
    "run_worker",
    "subscribe_job_events",
    "sweep_orphans",
    "sweep_view",
    "utc_now",
    "workers_alive",
]
