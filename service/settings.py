"""Every setting of Backprop, read from the environment (one place, one cached getter)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker import Quota
from worker.blobs import BlobConfig, parse_s3_location

MiB = 1024 * 1024
GiB = 1024 * MiB


class Settings(BaseSettings):
    """Backprop's configuration. Field `x` is read from `BACKPROP_X` unless an alias says otherwise."""

    model_config = SettingsConfigDict(env_prefix="BACKPROP_", extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "BACKPROP_REDIS_URL"),
        description="Redis URL (redis://[:password@]host:port/db). `backprop serve` embeds its own Redis "
        "unless REDIS_URL is set.",
    )
    data_dir: Path = Field(
        Path("./var"), description="Data directory: blobs, the embedded Redis' AOF and password, logs."
    )
    blob_dir: Path | None = Field(
        None, description="Directory of dataset and model arrays shared by API and workers (default DATA_DIR/blobs)."
    )
    blob_url: str | None = Field(
        None,
        description="Where datasets, models and checkpoints live: a directory, or s3://bucket/prefix for an "
        "S3-compatible object store (then API and workers share nothing but Redis and the bucket). "
        "Default: BACKPROP_BLOB_DIR.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of a non-AWS S3-compatible store (MinIO: http://minio:9000); empty for AWS."
    )
    aws_access_key_id: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"),
        description="Access key of the S3 blob store (empty: boto3's usual sources, e.g. an instance role).",
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"), description="Secret key of the S3 blob store."
    )
    aws_default_region: str | None = Field(
        None, validation_alias=AliasChoices("AWS_DEFAULT_REGION"), description="Region of the S3 bucket."
    )
    blob_connect_timeout: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds to wait for a connection to an S3 blob store: an unreachable store is answered "
        "503 after two such tries, as BACKPROP_REDIS_TIMEOUT bounds a Redis outage.",
    )
    blob_timeout: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Seconds to wait for an S3 blob store's answer once connected (a store that accepts "
        "connections but does not answer is answered 503 after two such waits).",
    )
    blob_retry_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How long a training job retries a blob read or write while the store is unreachable, "
        "before it leaves the job to its retries (BACKPROP_JOB_RETRIES).",
    )
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    api_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes for the API.")
    queue_name: str = Field("training", min_length=1, description="RQ queue that carries training jobs.")

    # --- access ------------------------------------------------------------------------------------
    api_keys: str = Field(
        "",
        description="Comma-separated `key:role` pairs (role `user` or `admin`). Empty: no authentication, "
        "and the API refuses to listen on any address but loopback (see BACKPROP_ALLOW_NO_AUTH).",
    )
    allow_no_auth: bool = Field(
        False,
        description="Let the API listen on a non-loopback address without API keys (every caller is an admin).",
    )
    metrics_public: bool = Field(True, description="Serve /metrics without an API key.")

    # --- logs --------------------------------------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=AliasChoices("LOG_FORMAT", "BACKPROP_LOG_FORMAT"), description="text or json."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=AliasChoices("LOG_LEVEL", "BACKPROP_LOG_LEVEL"), description="Log level."
    )

    # --- Redis client ------------------------------------------------------------------------------
    redis_timeout: float = Field(1.0, gt=0, le=60, description="Redis socket/connect timeout in seconds.")

    # --- workers, jobs, fault tolerance --------------------------------------------------------------
    worker_ttl: int = Field(60, ge=15, le=3600, description="Seconds after which a silent worker is dead.")
    job_monitoring_interval: int = Field(10, ge=1, le=600, description="Work-horse heartbeat interval (s).")
    reaper_interval: float = Field(15.0, gt=0, le=3600, description="How often the API cleans RQ registries (s).")
    job_retries: int = Field(2, ge=0, le=10, description="Automatic re-runs of a job whose worker died.")
    job_timeout_min: int = Field(60, ge=1, description="Lower bound of a job's computed timeout (s).")
    job_timeout_max: int = Field(24 * 3600, ge=1, description="Ceiling of a job's computed timeout (s).")
    checkpoint_seconds: float = Field(
        10.0, ge=0, le=3600, description="Checkpoint after an epoch once this many seconds passed since the last."
    )
    progress_min_interval: float = Field(0.2, ge=0, le=60, description="Minimum seconds between progress writes.")
    blas_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="BLAS threads of each worker's training (0: automatic: `backprop serve --workers N` gives "
        "each worker max(1, cores // N); a worker started alone keeps the BLAS default).",
    )
    job_retention_days: float = Field(
        0, ge=0, description="Finished job records older than this are deleted; their models stay (0: keep)."
    )
    orphan_sweep_interval: float = Field(
        3600.0,
        ge=0,
        description="How often the API deletes orphan blobs (their record is gone) and temp files of killed "
        "writes, first shortly after it starts (s; 0: never).",
    )
    orphan_min_age: float = Field(
        3600.0, ge=0, description="Orphan blobs and temp files younger than this many seconds are kept."
    )

    # --- limits (OWASP API4) -----------------------------------------------------------------------
    max_upload_bytes: int = Field(100 * MiB, ge=1, description="Largest dataset upload in bytes (413 above).")
    max_json_bytes: int = Field(
        32 * MiB, ge=1, description="Largest JSON request body in bytes (413 before it is parsed)."
    )
    dataset_dtype: Literal["float32", "float64"] = Field(
        "float32",
        description="Float type uploaded features are stored in; float32 halves memory and matches the "
        "default training dtype (jobs with dtype float64 then train on float32-precise data).",
    )
    max_rows: int = Field(1_000_000, ge=2, description="Most samples in a dataset.")
    max_features: int = Field(10_000, ge=1, description="Most features in a dataset.")
    max_classes: int = Field(1_000, ge=2, description="Most distinct labels in a dataset.")
    max_hidden_layers: int = Field(10, ge=0, description="Most hidden layers in a job.")
    max_layer_width: int = Field(4096, ge=1, description="Widest hidden layer in a job.")
    max_parameters: int = Field(20_000_000, ge=1, description="Most trainable parameters of a job's network.")
    max_epochs: int = Field(10_000, ge=1, description="Most epochs of a job.")
    max_batch_size: int = Field(65_536, ge=1, description="Largest batch size of a job.")
    max_predict_rows: int = Field(10_000, ge=1, description="Most instances in one predict request.")
    max_queued_jobs_per_key: int = Field(100, ge=1, description="Queued jobs one API key may have (429 above).")
    max_running_jobs_per_key: int = Field(
        0, ge=0, description="Jobs of one API key that run at once; the others wait in the queue (0: no limit)."
    )
    max_sweep_jobs: int = Field(
        200, ge=1, description="Most jobs one sweep starts with: trials x seeds (422 above)."
    )
    max_queue_depth: int = Field(1_000, ge=1, description="Jobs in the queue in all (503 above).")
    max_job_memory_bytes: int = Field(
        4 * GiB,
        ge=1,
        description="Most memory a job's training may need, as estimated from its network, batch size and "
        "dataset when it is submitted (422 above).",
    )
    max_stored_bytes_per_key: int = Field(
        10 * GiB,
        ge=1,
        description="Bytes of datasets and models one API key may store (429 above; a model of a job already "
        "accepted is stored even past it; new jobs are then refused until space is freed).",
    )
    max_datasets_per_key: int = Field(1_000, ge=1, description="Datasets one API key may store (429 above).")
    max_models_per_key: int = Field(
        1_000,
        ge=1,
        description="Models one API key may store, counting those its queued and running jobs will make "
        "(429 for a new job above).",
    )
    prediction_chunk_rows: int = Field(
        65_536, ge=1, le=10_000_000, description="Rows a batch prediction computes and streams at a time."
    )
    model_cache_size: int = Field(32, ge=1, description="Most models the API keeps loaded in memory.")
    model_cache_bytes: int = Field(
        512 * MiB,
        ge=1,
        description="Most bytes of model weights the API keeps loaded in memory, per API process "
        "(least recently used models go first; a larger model is served without being kept).",
    )
    predict_inline_compute: int = Field(
        1_000_000,
        ge=0,
        description="Predictions of at most this many rows x model parameters run on the event loop; "
        "larger ones in the thread pool.",
    )

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        for entry in filter(None, (part.strip() for part in value.split(","))):
            key, sep, role = entry.rpartition(":")
            if not sep or not key or role not in ("user", "admin"):
                raise ValueError("each entry must be `key:role` with role `user` or `admin`")
        return value

    @field_validator("blob_url")
    @classmethod
    def _check_blob_url(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("s3://"):
            parse_s3_location(value)
        return value or None

    @property
    def blobs(self) -> Path:
        """The blob directory, resolved (when the blobs are files)."""
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"

    @property
    def quota(self) -> Quota:
        """What one API key may store."""
        return Quota(
            max_bytes=self.max_stored_bytes_per_key,
            max_datasets=self.max_datasets_per_key,
            max_models=self.max_models_per_key,
        )

    @property
    def blob_location(self) -> str:
        """BACKPROP_BLOB_URL, or the blob directory."""
        return self.blob_url if self.blob_url else str(self.blobs)

    def blob_config(self, *, attempts: int = 2) -> BlobConfig:
        """Where the blob store is and how to reach it; `attempts` is the client's tries per call."""
        secret = self.aws_secret_access_key
        return BlobConfig(
            self.blob_location,
            endpoint_url=self.s3_endpoint_url or None,
            access_key_id=self.aws_access_key_id or None,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            region=self.aws_default_region or None,
            timeout=self.blob_timeout,
            attempts=attempts,
            connect_timeout=self.blob_connect_timeout,
        )

    def open_access_refusal(self, host: str) -> str | None:
        """Why the API must not listen on `host` with these settings, or None when it may."""
        if self.parsed_api_keys() or self.allow_no_auth or is_loopback(host):
            return None
        return (
            f"refusing to listen on {host} without API keys: anyone who can reach it would be an admin. "
            "Set BACKPROP_API_KEYS (`key:role` pairs), listen on 127.0.0.1, "
            "or set BACKPROP_ALLOW_NO_AUTH=true to run without authentication on purpose"
        )

    def parsed_api_keys(self) -> dict[str, str]:
        """API key -> role."""
        keys: dict[str, str] = {}
        for entry in filter(None, (part.strip() for part in self.api_keys.split(","))):
            key, _, role = entry.rpartition(":")
            keys[key] = role
        return keys


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the API on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process' settings; tests override with `app.dependency_overrides[get_settings]`."""
    return Settings()
