"""Process-wide worker configuration, set once before the RQ worker starts (work-horses inherit it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker.blobs import BlobConfig, BlobStore, open_blob_store


@dataclass(frozen=True)
class WorkerConfig:
    """What a work-horse needs besides the job id."""

    blobs: BlobConfig
    checkpoint_seconds: float = 10.0
    progress_min_interval: float = 0.2
    job_monitoring_interval: int = 10
    blob_retry_seconds: float = 30.0
    blas_threads: int | None = None  # BLAS threads of this worker's work-horses (None: not known)


_config: WorkerConfig | None = None
_blob_store: BlobStore | None = None


def configure(
    blobs: BlobConfig | Path | str,
    *,
    checkpoint_seconds: float = 10.0,
    progress_min_interval: float = 0.2,
    job_monitoring_interval: int = 10,
    blob_retry_seconds: float = 30.0,
    blas_threads: int | None = None,
) -> WorkerConfig:
    """Set the worker configuration of this process (called by `run_worker` and by tests); `blobs` is a
    BlobConfig or a blob directory."""
    global _config, _blob_store
    if checkpoint_seconds < 0:
        raise ValueError(f"checkpoint_seconds must be >= 0, got {checkpoint_seconds}")
    if progress_min_interval < 0:
        raise ValueError(f"progress_min_interval must be >= 0, got {progress_min_interval}")
    if blob_retry_seconds < 0:
        raise ValueError(f"blob_retry_seconds must be >= 0, got {blob_retry_seconds}")
    _config = WorkerConfig(
        blobs=blobs if isinstance(blobs, BlobConfig) else BlobConfig(str(blobs)),
        checkpoint_seconds=float(checkpoint_seconds),
        progress_min_interval=float(progress_min_interval),
        job_monitoring_interval=int(job_monitoring_interval),
        blob_retry_seconds=float(blob_retry_seconds),
        blas_threads=blas_threads,
    )
    _blob_store = None
    return _config


def pin_blas_threads(threads: int) -> int | None:
    """Limit this process' BLAS thread pools (work-horses forked later inherit it) to `threads` (0: leave
    them as they are); returns the BLAS threads now in effect (None when no BLAS library is loaded)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if threads > 0:
        threadpool_limits(limits=threads, user_api="blas")
    counts = [int(pool["num_threads"]) for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None


def current() -> WorkerConfig:
    """The configuration set by `configure`; RuntimeError when it was never called."""
    if _config is None:
        raise RuntimeError("worker not configured: call worker.configure(blobs=...) before running jobs")
    return _config


def blob_store() -> BlobStore:
    """This process' blob store, opened once: made before RQ forks, a work-horse inherits it (an S3 client
    that has not connected yet), so a job does not pay for building one."""
    global _blob_store
    if _blob_store is None:
        _blob_store = open_blob_store(current().blobs)
    return _blob_store
