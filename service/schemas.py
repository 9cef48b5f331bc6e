"""Request models (`...Create`) and response models (`...Public`) of the HTTP API, version 1."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema

from worker.aliases import NAME_MAX_LENGTH, NAME_PATTERN

# Strict numbers: booleans and numeric strings are not numbers; NaN and infinities are refused.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)]
ResourceId = Annotated[str, Field(min_length=1, max_length=128)]

JobKind = Literal["train", "evaluate", "verify"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled", "stalled"]


def _finite_or_none(value: Any) -> Any:
    """Non-finite floats (a diverged loss) are shown as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


MaybeFloat = Annotated[float | None, BeforeValidator(_finite_or_none)]


def _label(value: Any) -> int | str:
    """A class label: an integer or a non-empty string (not a boolean, float or list)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a label must be an integer or a string")
    if isinstance(value, str) and not 1 <= len(value) <= 256:
        raise ValueError("a label string must have 1 to 256 characters")
    return value


LabelValue = Annotated[
    int | str,
    PlainValidator(_label),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1, "maxLength": 256}]}),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors -----------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """Where a problem is: a field path, a row and column, or a limit."""

    model_config = ConfigDict(extra="allow")
    message: str
    field: str | None = None


class ErrorInfo(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["epochs: Input should be less than or equal to 10000"])
    details: list[ErrorDetail] = []


class ErrorPublic(BaseModel):
    """Every error response has this shape."""

    error: ErrorInfo


# --- datasets ---------------------------------------------------------------------------------------


class DatasetCreate(_Request):
    """A dataset as JSON: one row of features per label."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"features": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], "labels": [1, 1, 0, 0]}]
        },
    )
    features: list[list[FiniteFloat]] = Field(min_length=1)
    labels: list[LabelValue] = Field(min_length=1)
    name: Name | None = None


class DatasetPublic(BaseModel):
    id: str
    name: str | None
    n_samples: int
    n_features: int
    classes: dict[str, int] = Field(description="label -> number of rows", examples=[{"0": 2, "1": 2}])
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetPublic]
    total: int
    offset: int
    limit: int


# --- jobs -------------------------------------------------------------------------------------------


class JobCreate(_Request):
    """A training job: the dataset and the hyperparameters of the network and its training."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "8c1f0c2e5d8a4f8e9d3b6a1c2e4f6a8b",
                    "name": "digits",
                    "hidden_layers": [64],
                    "epochs": 30,
                    "optimizer": "adam",
                    "learning_rate": 0.001,
                }
            ]
        },
    )
    dataset_id: ResourceId
    name: Name | None = Field(None, description="Model name; default derived from the dataset.")
    hidden_layers: list[Annotated[int, Field(strict=True, ge=1, le=1_000_000)]] = Field(
        default=[100], max_length=1000, description="Widths of the hidden layers."
    )
    activation: Literal["relu", "leaky_relu", "tanh", "sigmoid", "identity"] = "relu"
    output: Literal["auto", "softmax", "sigmoid"] = Field(
        "auto", description="`auto`: sigmoid for two classes, softmax otherwise."
    )
    epochs: int = Field(200, strict=True, ge=1, le=1_000_000)
    batch_size: int = Field(32, strict=True, ge=1, le=100_000_000)
    optimizer: Literal["sgd", "momentum", "nesterov", "adam"] = "adam"
    learning_rate: float = Field(1e-3, strict=True, gt=0, le=10, allow_inf_nan=False)
    momentum: float = Field(0.9, strict=True, ge=0, lt=1, allow_inf_nan=False)
    beta1: float = Field(0.9, strict=True, ge=0, lt=1, allow_inf_nan=False)
    beta2: float = Field(0.999, strict=True, ge=0, lt=1, allow_inf_nan=False)
    epsilon: float = Field(1e-8, strict=True, gt=0, le=1, allow_inf_nan=False)
    weight_decay: float = Field(0.0, strict=True, ge=0, le=1, allow_inf_nan=False)
    l2: float = Field(1e-4, strict=True, ge=0, le=100, allow_inf_nan=False)
    lr_schedule: Literal["constant", "step", "exponential", "cosine"] = "constant"
    lr_step_size: int = Field(10, strict=True, ge=1, le=1_000_000)
    lr_gamma: float = Field(0.5, strict=True, gt=0, le=1, allow_inf_nan=False)
    clip_norm: float | None = Field(None, strict=True, gt=0, le=1e6, allow_inf_nan=False)
    validation_fraction: float = Field(0.1, strict=True, ge=0, le=0.5, allow_inf_nan=False)
    early_stopping: bool = Field(False, strict=True)
    patience: int = Field(10, strict=True, ge=1, le=100_000)
    min_delta: float = Field(1e-4, strict=True, ge=0, le=1e6, allow_inf_nan=False)
    seed: int = Field(0, strict=True, ge=0, le=2**32 - 1)
    dtype: Literal["float32", "float64"] = "float32"
    standardize: bool = Field(True, strict=True, description="Standardize features with training statistics.")


class EpochPublic(BaseModel):
    """Metrics of one epoch."""

    epoch: int
    epochs: int | None = None
    train_loss: MaybeFloat = None
    train_accuracy: MaybeFloat = None
    validation_loss: MaybeFloat = None
    validation_accuracy: MaybeFloat = None
    learning_rate: MaybeFloat = None
    seconds: MaybeFloat = None
    samples_per_second: MaybeFloat = None


class ProgressPublic(EpochPublic):
    """The latest epoch of a running job and the estimated time left."""

    eta_seconds: MaybeFloat = Field(None, description="Estimated seconds until the last epoch ends.")
    updated_at: datetime | None = None


class JobSummaryPublic(BaseModel):
    """A job as lists show it: everything but the per-epoch history (read the job for that)."""

    id: str
    kind: JobKind = Field("train", description="`train`, `evaluate` (a model on a dataset) or `verify`.")
    name: str
    dataset_id: str
    status: JobStatus
    config: dict[str, Any] = Field(
        description="The training configuration (engine TrainConfig); `{model_id}` for evaluate and verify jobs."
    )
    queue_position: int | None = Field(None, description="0-based position in the queue while queued.")
    progress: ProgressPublic | None = None
    model_id: str | None = None
    error: str | None = None
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = Field(
        None, description="What an evaluate or verify job found (the full report is stored with the model)."
    )


class HistoryPage(BaseModel):
    """One page of a per-epoch history (`history_offset`/`history_limit` choose it) and its full length."""

    history: list[EpochPublic] = []
    history_total: int = Field(0, description="Epochs in the whole history.")
    history_offset: int = Field(0, description="Index of the page's first epoch in the whole history.")


class JobPublic(JobSummaryPublic, HistoryPage):
    """A job with one page of its per-epoch history."""


class JobList(BaseModel):
    items: list[JobSummaryPublic]
    total: int
    offset: int
    limit: int


# --- models -----------------------------------------------------------------------------------------


class ModelSummaryPublic(BaseModel):
    """A model as lists show it: everything but the per-epoch history (read the model for that)."""

    id: str
    name: str
    version: int
    dataset_id: str
    job_id: str
    created_at: datetime
    layer_sizes: list[int]
    activation: str
    output: str
    classes: list[int | str]
    n_features: int
    n_parameters: int
    metrics: dict[str, MaybeFloat | int | str]
    config: dict[str, Any]
    parent_model_id: str | None = Field(None, description="The model training started from (`init_model`).")


class ModelPublic(ModelSummaryPublic, HistoryPage):
    """A model with one page of its training history, its validation report and its receipt."""

    validation_report: dict[str, Any] | None = Field(
        None, description="Evaluation report on the validation split at the end of training."
    )
    receipt: dict[str, Any] | None = Field(
        None, description="What `verify` needs to retrain it bit for bit, and the sha256 of its weights."
    )


class ModelList(BaseModel):
    items: list[ModelSummaryPublic]
    total: int
    offset: int
    limit: int


class PredictCreate(_Request):
    """Raw feature rows, in the column order of the training data."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"instances": [[0.0, 1.0]]}]})
    instances: list[list[FiniteFloat]] = Field(min_length=1)


class PredictionPublic(BaseModel):
    model_id: str
    version: int
    classes: list[int | str]
    predictions: list[int | str]
    probabilities: list[list[float]] = Field(description="One column per class, in the order of `classes`.")


# --- aliases, evaluations, verifications ---------------------------------------------------------------

Metric = Literal["accuracy", "log_loss", "macro_f1"]


class PromotionGuard(_Request):
    """Promote only when the new version is at least as good as the alias' current holder on a dataset."""

    dataset_id: ResourceId
    metric: Metric = Field(description="`log_loss` is better when lower; the others when higher.")
    min_delta: float = Field(
        0.0, strict=True, ge=0, le=1e6, allow_inf_nan=False, description="How much better the new version must be."
    )


class AliasCreate(_Request):
    """Point an alias at a version of the name, optionally guarded by an evaluation."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"version": 2},
                {"version": 3, "require": {"dataset_id": "8c1f0c2e5d8a4f8e", "metric": "accuracy", "min_delta": 0.0}},
            ]
        },
    )
    version: int = Field(strict=True, ge=1, le=2**31)
    require: PromotionGuard | None = None


class AliasMovePublic(BaseModel):
    """One move of an alias: from which version to which (null: absent), when and by which key."""

    model_config = ConfigDict(populate_by_name=True)
    alias: str
    from_: int | None = Field(alias="from", serialization_alias="from")
    to: int | None
    at: datetime
    by: str | None = Field(description="Id of the API key (sha256 of the key; null without authentication).")


class ComparisonPublic(BaseModel):
    """The figures a guarded promotion compared."""

    metric: Metric
    min_delta: float
    dataset_id: str
    candidate: dict[str, Any] = Field(description="`version`, `value` and the `evaluation_id` of the new version.")
    current: dict[str, Any] | None = Field(description="The same for the alias' holder; null when it had none.")


class AliasPublic(BaseModel):
    alias: str
    name: str
    version: int
    model_id: str
    updated_at: datetime
    updated_by: str | None
    comparison: ComparisonPublic | None = None
    history: list[AliasMovePublic] = []


class AliasList(BaseModel):
    name: str
    items: list[AliasPublic] = Field(description="Current aliases, each with its own moves.")
    history: list[AliasMovePublic] = Field(description="Every move of every alias of the name, oldest first.")


class EvaluationCreate(_Request):
    dataset_id: ResourceId


class ConfusionMatrixPublic(BaseModel):
    labels: list[int | str] = Field(description="The model's classes, in its order.")
    matrix: list[list[int]] = Field(description="Rows: true label; columns: predicted label.")


class ClassMetricsPublic(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class CalibrationBinPublic(BaseModel):
    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None


class CalibrationPublic(BaseModel):
    ece: float = Field(description="Expected calibration error over 10 equal-width bins of the top probability.")
    bins: list[CalibrationBinPublic]


class EvaluationPublic(BaseModel):
    """An evaluation report of a model on a dataset."""

    id: str
    model_id: str
    name: str
    version: int
    dataset_id: str
    dataset_sha256: str
    created_at: datetime
    n_samples: int
    accuracy: float
    log_loss: float
    macro_f1: float
    confusion_matrix: ConfusionMatrixPublic
    per_class: dict[str, ClassMetricsPublic]
    calibration: CalibrationPublic
    unknown_labels: list[int | str] = Field(description="True labels the model never saw (counted as errors).")


class EvaluationList(BaseModel):
    items: list[EvaluationPublic]
    total: int


class EnvironmentDifference(BaseModel):
    field: str = Field(description="`engine_version`, `numpy_version`, `blas_library`, `blas_version`, ...")
    recorded: Any
    current: Any


class ChecksumPublic(BaseModel):
    ok: bool = Field(description="Whether the stored model file matches its checksum.")
    message: str | None = None


class VerificationPublic(BaseModel):
    """The result of retraining a model from its receipt."""

    id: str
    model_id: str
    job_id: str | None = None
    created_at: datetime
    match: bool = Field(
        description="Retrained weights equal the receipt's bit for bit, and the stored model is intact."
    )
    weights_sha256: str | None = Field(description="sha256 of the retrained weights.")
    expected_sha256: str | None = Field(description="sha256 of the weights in the receipt.")
    environment_differs: list[EnvironmentDifference]
    checksum: ChecksumPublic
    problems: list[str] = []
    error: str | None = None


class VerificationList(BaseModel):
    items: list[VerificationPublic]
    total: int


# --- health -----------------------------------------------------------------------------------------


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessPublic(BaseModel):
    status: Literal["ready", "unavailable"]
    redis: bool
    workers: int
