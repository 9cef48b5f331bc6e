"""Dataset, job and model records: JSON-safe dataclasses and their Redis encodings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from worker.jobstate import JobStatus

JOB_KINDS = ("train", "evaluate", "verify")
"""What a job does: train a model, evaluate one on a dataset, or retrain one from its receipt to verify it."""


def utc_now() -> str:
    """The current time, ISO 8601 UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class DatasetRecord:
    """Metadata of an uploaded dataset (its arrays are a blob)."""

    id: str
    name: str | None
    owner: str | None
    n_samples: int
    n_features: int
    classes: dict[str, int]
    label_kind: str
    created_at: str
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetRecord:
        """Inverse of `to_dict` (unknown keys ignored)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class JobRecord:
    """A training job as the API shows it."""

    id: str
    name: str
    owner: str | None
    dataset_id: str
    spec: dict[str, Any]
    status: JobStatus
    progress: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    model_id: str | None = None
    error: str | None = None
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    timeout: int | None = None
    sweep_id: str | None = None
    continues: str | None = None  # a job whose final training state this one continues to more epochs
    keep_state: bool = False  # keep the final training state (a sweep may continue it)
    final_state: dict[str, Any] | None = None  # {"path", "sha256"} of that state's blob
    blas_threads: int | None = None
    kind: str = "train"
    result: dict[str, Any] | None = None
    parent_model_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


@dataclass(frozen=True)
class ModelRecord:
    """Metadata of a trained model (its weights are a blob)."""

    id: str
    name: str
    version: int
    owner: str | None
    dataset_id: str
    job_id: str
    created_at: str
    layer_sizes: list[int]
    activation: str
    output: str
    classes: list[Any]
    n_features: int
    n_parameters: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    config: dict[str, Any]
    sha256: str
    size_bytes: int
    validation_report: dict[str, Any] | None = None
    receipt: dict[str, Any] | None = None
    parent_model_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


# Job hash fields; every value is stored JSON-encoded so Lua scripts can write them verbatim.
JOB_FIELDS = tuple(f.name for f in fields(JobRecord) if f.name != "history")


def encode_job_fields(values: dict[str, Any]) -> dict[str, str]:
    """Field -> JSON text, for HSET."""
    return {name: json.dumps(value) for name, value in values.items()}


def decode_job_fields(names: tuple[str, ...], values: list[Any]) -> dict[str, Any]:
    """Field -> value from HMGET's answer for `names` (None for a field that is not set)."""
    return {name: None if value is None else json.loads(value) for name, value in zip(names, values, strict=True)}


def decode_job(raw: dict[bytes, bytes], history: list[bytes]) -> JobRecord:
    """A job record from its hash (HGETALL) and history list (LRANGE)."""
    data = {key.decode(): json.loads(value) for key, value in raw.items()}
    known = {name: data[name] for name in JOB_FIELDS if name in data}
    known["status"] = JobStatus(known["status"])
    return JobRecord(**known, history=[json.loads(entry) for entry in history])
