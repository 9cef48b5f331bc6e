"""Request models (`...Create`) and response models (`...Public`) of the HTTP API, version 1."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    create_model,
    model_validator,
)

from engine import OptionSpec, TrainConfig, json_safe, option_fields
from worker import JobStatus
from worker.aliases import NAME_MAX_LENGTH, NAME_PATTERN

# Strict numbers: booleans and numeric strings are not numbers; NaN and infinities are refused.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)]
ResourceId = Annotated[str, Field(min_length=1, max_length=128)]
ModelRef = Annotated[str, Field(min_length=1, max_length=2 * NAME_MAX_LENGTH + 1)]

JobKind = Literal["train", "evaluate", "verify"]


# Non-finite floats (a diverged loss) are shown as null: JSON has no NaN.
MaybeFloat = Annotated[float | None, BeforeValidator(json_safe)]


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


# The service's own caps on the training options, on top of the rules TrainConfig enforces (its choices and
# bounds, published from `engine.option_fields()`): an upper bound for every number the engine leaves
# open, so that the wire bounds every number, and one tighter cap -- `validation_fraction` at most 0.5,
# so that at least half of every class trains (the engine allows up to just below 1). The limits that
# depend on the deployment (max_epochs, max_hidden_layers, max_layer_width, max_batch_size, max_parameters)
# are settings, checked by the jobs route with a `limit_exceeded` error.
OPTION_CAPS: dict[str, float] = {
    "hidden_layers": 1_000_000,  # each width
    "epochs": 1_000_000,
    "batch_size": 100_000_000,
    "learning_rate": 10,
    "epsilon": 1,
    "weight_decay": 1,
    "l2": 100,
    "lr_step_size": 1_000_000,
    "clip_norm": 1e6,
    "validation_fraction": 0.5,
    "patience": 100_000,
    "min_delta": 1e6,
    "seed": 2**32 - 1,
}
MAX_HIDDEN_LAYERS_LISTED = 1000
_CAP_NOTES = {"validation_fraction": " At most 0.5 through the API, so that at least half of every class trains."}


def _bounds(spec: OptionSpec) -> dict[str, float]:
    """The engine's bounds of `spec`, its upper bound replaced by the service's cap where there is one."""
    bounds = {key: getattr(spec, key) for key in ("ge", "gt", "le", "lt") if getattr(spec, key) is not None}
    cap = OPTION_CAPS.get(spec.name)
    if cap is not None:
        upper = bounds.pop("le", None) if "le" in bounds else bounds.pop("lt", None)
        if upper is not None and cap > upper:
            raise ValueError(f"service cap {spec.name} <= {cap} is looser than the engine's bound {upper}")
        bounds["le"] = cap
    return bounds


def _option_field(spec: OptionSpec) -> tuple[Any, Any]:
    """A JobCreate field (annotation, FieldInfo) for one TrainConfig option: same name, type, default."""
    bounds = _bounds(spec)
    default: Any = spec.default
    extra: dict[str, Any] = {}
    annotation: Any
    if spec.kind is tuple:
        annotation = list[Annotated[int, Field(strict=True, **bounds)]]
        default, extra = list(spec.default), {"max_length": MAX_HIDDEN_LAYERS_LISTED}
    elif spec.kind is str:
        annotation = Literal.__getitem__(spec.choices)
    elif spec.kind is float:
        annotation, extra = float, {"strict": True, "allow_inf_nan": False, **bounds}
    else:  # int and bool
        annotation, extra = spec.kind, {"strict": True, **bounds}
    if spec.nullable:
        annotation = annotation | None
    description = spec.description + _CAP_NOTES.get(spec.name, "")
    return annotation, Field(default, description=description, **extra)


class JobFields(_Request):
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
    name: Name | None = Field(
        None, description="Model name; default: `init_model`'s name, else derived from the dataset."
    )
    init_model: ModelRef | None = Field(
        None,
        description="Continue training this model (id, name or `name@alias`): start from its weights; the "
        "network (features, hidden layers, classes, activation, output) must be the same.",
    )

    def train_config(self) -> TrainConfig:
        """The request's training options as the engine's config."""
        return TrainConfig.from_dict(self.model_dump(exclude={"dataset_id", "name", "init_model"}))


if TYPE_CHECKING:
    JobCreate = JobFields
else:
    # Every TrainConfig field, with its type, default, choices and bounds (plus the caps above).
    JobCreate = create_model(
        "JobCreate",
        __base__=JobFields,
        __doc__=JobFields.__doc__,
        __module__=__name__,
        **{spec.name: _option_field(spec) for spec in option_fields()},
    )


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
    sweep_id: str | None = Field(None, description="The sweep this job is a trial of, if any.")
    blas_threads: int | None = Field(None, description="BLAS threads of the worker that ran it.")
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
    offset: int
    limit: int


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
    offset: int
    limit: int


# --- sweeps -----------------------------------------------------------------------------------------

SWEEP_NAME_MAX_LENGTH = 40  # room for a child's "-t<trial>-s<seed>" within the 64 characters of a model name
SweepName = Annotated[str, Field(min_length=1, max_length=SWEEP_NAME_MAX_LENGTH, pattern=NAME_PATTERN)]
Seed = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]
Bound = Annotated[float, Field(strict=False, allow_inf_nan=False)]


LowHigh = Annotated[list[Bound], Field(min_length=2, max_length=2, description="[low, high]")]


class Distribution(_Request):
    """Exactly one of: `uniform` [low, high] (a float), `log_uniform` [low, high] (a float whose logarithm is
    uniform; both above 0), `choice` [values...] (each equally likely)."""

    uniform: LowHigh | None = None
    log_uniform: LowHigh | None = None
    choice: list[Any] | None = Field(None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = {name: value for name, value in self.model_dump().items() if value is not None}
        if len(given) != 1:
            raise ValueError("give exactly one of `uniform`, `log_uniform` and `choice`")
        for name in ("uniform", "log_uniform"):
            bounds = given.get(name)
            if bounds is not None and bounds[0] > bounds[1]:
                raise ValueError(f"{name}: low must not be above high")
        if given.get("log_uniform") and given["log_uniform"][0] <= 0:
            raise ValueError("log_uniform: both bounds must be above 0")
        return self


class RandomSearch(_Request):
    """`n_trials` configurations drawn from `space` by a generator seeded with `seed` (the same spec gives the
    same trials)."""

    n_trials: int = Field(strict=True, ge=1, le=10_000)
    seed: Seed = 0
    space: dict[str, Distribution] = Field(min_length=1, max_length=100)


class EarlyStop(_Request):
    """Synchronous successive halving: every trial runs `min_epochs`; the best 1/eta (by the mean over seeds)
    continue from their own training state to eta x the epochs, and so on up to the base's `epochs`."""

    type: Literal["halving"]
    min_epochs: int = Field(strict=True, ge=1, le=1_000_000)
    eta: int = Field(3, strict=True, ge=2, le=100)


class SweepCreate(_Request):
    """A hyperparameter sweep: `base` options, a `grid` or a `random` space of overrides, and seeds."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "8c1f0c2e5d8a4f8e9d3b6a1c2e4f6a8b",
                    "name": "digits-search",
                    "base": {"epochs": 60, "optimizer": "adam"},
                    "grid": {"learning_rate": [0.01, 0.001], "hidden_layers": [[32], [64, 32]]},
                    "seeds": [0, 1, 2],
                    "metric": "validation_loss",
                }
            ]
        },
    )
    dataset_id: ResourceId
    name: SweepName | None = Field(None, description="Name of the sweep; its children's models are NAME-tI-sS.")
    base: dict[str, Any] = Field(default_factory=dict, description="Job options every trial shares.")
    grid: dict[str, list[Any]] | None = Field(
        None, min_length=1, description="Option -> values; one trial per combination."
    )
    random: RandomSearch | None = None
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=100)
    metric: Literal["validation_loss", "validation_accuracy"] = "validation_loss"
    early_stop: EarlyStop | None = None
    alias: Name | None = Field(None, description="Alias given to the best model once the sweep succeeds.")

    @model_validator(mode="after")
    def _one_space(self) -> SweepCreate:
        if (self.grid is None) == (self.random is None):
            raise ValueError("give exactly one of `grid` and `random`")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: each seed at most once")
        for name, values in (self.grid or {}).items():
            if not values:
                raise ValueError(f"grid.{name}: give at least one value")
        return self


class SweepSeedPublic(BaseModel):
    """One seed of a trial: its job, and the metric of the model it trained."""

    seed: int
    job_id: str | None
    status: JobStatus | None
    metric: MaybeFloat = None
    model_id: str | None = None
    error: str | None = None


class SweepTrialPublic(BaseModel):
    """A trial at the last rung it reached: mean and population standard deviation (ddof=0) of the metric
    over the seeds whose job succeeded."""

    index: int
    overrides: dict[str, Any]
    rung: int
    epochs: int
    seeds: list[SweepSeedPublic]
    mean: MaybeFloat = None
    std: MaybeFloat = None
    status: JobStatus


class SweepRankPublic(BaseModel):
    index: int
    overrides: dict[str, Any]
    mean: MaybeFloat = None
    std: MaybeFloat = None
    rung: int
    epochs: int


class SweepBestPublic(BaseModel):
    """The leaderboard's first trial and the model of its best seed."""

    trial: int
    overrides: dict[str, Any]
    config: dict[str, Any]
    seed: int
    metric: MaybeFloat = None
    model_id: str | None
    job_id: str | None


class SweepSummaryPublic(BaseModel):
    """A sweep as lists show it."""

    id: str
    name: str
    dataset_id: str
    status: JobStatus
    metric: str
    seeds: list[int]
    n_trials: int
    counts: dict[str, int] = Field(description="Children by job status.")
    best: SweepBestPublic | None = None
    alias: str | None = None
    alias_status: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class SweepPublic(SweepSummaryPublic):
    """A sweep with every trial, the leaderboard (by mean metric; ties by std, then index; with halving a
    later rung first) and the rungs it ran."""

    early_stop: EarlyStop | None = None
    spec: dict[str, Any]
    trials: list[SweepTrialPublic]
    leaderboard: list[SweepRankPublic]
    rungs: list[dict[str, Any]]


class SweepList(BaseModel):
    items: list[SweepSummaryPublic]
    total: int
    offset: int
    limit: int


# --- health -----------------------------------------------------------------------------------------


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessPublic(BaseModel):
    status: Literal["ready", "unavailable"]
    redis: bool
    workers: int


# --- batch predictions ------------------------------------------------------------------------------


class BatchPredictionCreate(_Request):
    """Score a stored dataset (its labels, if any, are ignored)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"dataset_id": "0" * 32}]})
    dataset_id: str = Field(min_length=1, max_length=64)


class BatchProgressPublic(BaseModel):
    rows_done: int
    rows_total: int
    fraction: float
    updated_at: datetime | None = None


class BatchPredictionPublic(BaseModel):
    """A batch prediction: its status and, once `succeeded`, where its result is."""

    id: str
    model_id: str
    model_name: str
    model_version: int
    classes: list[int | str]
    source: Literal["dataset", "upload"]
    dataset_id: str | None = None
    n_rows: int
    n_features: int
    status: JobStatus
    progress: BatchProgressPublic | None = None
    error: str | None = None
    result_url: str | None = Field(None, description="Where the result is streamed from once succeeded.")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
