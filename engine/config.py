"""``TrainConfig``: every training hyperparameter, validated, JSON-safe -- the one source of the options.

Each field carries its rule (choices, bounds, a description) as dataclass metadata; :func:`option_fields`
lists the fields with their types so that the HTTP API's job schema is derived from them. The network a
config gives for a dataset (output layer, layer sizes) is :meth:`TrainConfig.network_shape`.
"""

from __future__ import annotations

import functools
import itertools
import math
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple, get_args, get_origin, get_type_hints

from engine.activations import ACTIVATIONS
from engine.optimizers import OPTIMIZERS

OUTPUT_CHOICES = ("auto", "softmax", "sigmoid")
LR_SCHEDULES = ("constant", "step", "exponential", "cosine")
DTYPE_CHOICES = ("float32", "float64")


def _int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _number(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not math.isfinite(v) or too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")


def _choice(name: str, value: object, choices: tuple[str, ...] | list[str]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {value!r}")


def option(
    default: Any,
    description: str,
    *,
    choices: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A :class:`TrainConfig` field: its default and the rule the engine enforces, kept as field metadata.

    ``choices`` (for strings) and the bounds ``ge``/``gt``/``le``/``lt`` (for numbers; for ``hidden_layers``
    they bound each width) are what ``__post_init__`` checks and what the HTTP API publishes.
    """
    rule = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    metadata: dict[str, Any] = {"description": description, **{k: v for k, v in rule.items() if v is not None}}
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (all defaulted; invalid values raise on construction).

    Each field's choices and bounds live in its metadata (see :func:`option`); :func:`option_fields` lists
    them with their types. ``weight_decay`` is decoupled weight decay (AdamW; used by ``adam`` only),
    separate from the ``l2`` penalty in the loss.
    """

    hidden_layers: tuple[int, ...] = option((100,), "Widths of the hidden layers.", ge=1)
    activation: str = option("relu", "Activation of the hidden layers.", choices=tuple(sorted(ACTIVATIONS)))
    output: str = option("auto", "`auto`: sigmoid for two classes, softmax otherwise.", choices=OUTPUT_CHOICES)
    epochs: int = option(200, "Passes over the training split.", ge=1)
    batch_size: int = option(32, "Rows per minibatch.", ge=1)
    optimizer: str = option("adam", "Update rule.", choices=tuple(sorted(OPTIMIZERS)))
    learning_rate: float = option(1e-3, "Step size (of the first epoch, under a schedule).", gt=0.0)
    momentum: float = option(0.9, "Momentum of `momentum` and `nesterov`.", ge=0.0, lt=1.0)
    beta1: float = option(0.9, "Adam's first-moment decay.", ge=0.0, lt=1.0)
    beta2: float = option(0.999, "Adam's second-moment decay.", ge=0.0, lt=1.0)
    epsilon: float = option(1e-8, "Adam's denominator offset.", gt=0.0)
    weight_decay: float = option(0.0, "Decoupled weight decay (AdamW; `adam` only).", ge=0.0)
    l2: float = option(1e-4, "L2 penalty on the weights, added to the loss.", ge=0.0)
    lr_schedule: str = option(
        "constant",
        "Learning rate per epoch: `step` multiplies it by `lr_gamma` every `lr_step_size` epochs, "
        "`exponential` every epoch, `cosine` anneals it over `epochs`.",
        choices=LR_SCHEDULES,
    )
    lr_step_size: int = option(10, "Epochs between the steps of the `step` schedule.", ge=1)
    lr_gamma: float = option(0.5, "Factor of the `step` and `exponential` schedules.", gt=0.0, le=1.0)
    clip_norm: float | None = option(None, "Clip the gradient's global L2 norm to this (null: no clipping).", gt=0.0)
    validation_fraction: float = option(0.1, "Share of each class held out for validation.", ge=0.0, lt=1.0)
    early_stopping: bool = option(False, "Stop once the monitored loss stops improving for `patience` epochs.")
    patience: int = option(10, "Epochs without improvement before early stopping.", ge=1)
    min_delta: float = option(
        1e-4,
        "Improvement of the monitored loss (validation loss, or training loss without a validation split) "
        "that resets `patience`.",
        ge=0.0,
    )
    seed: int = option(0, "Seed of the split, the initial weights and the shuffling.", ge=0)
    dtype: str = option("float32", "Floating-point type of the computation.", choices=DTYPE_CHOICES)
    standardize: bool = option(True, "Standardize features with training statistics.")

    def __post_init__(self) -> None:
        layers = self.hidden_layers
        if isinstance(layers, list):
            object.__setattr__(self, "hidden_layers", tuple(layers))
            layers = self.hidden_layers
        if not isinstance(layers, tuple):
            raise TypeError(f"hidden_layers must be a list of ints, got {layers!r}")
        for width in layers:
            if isinstance(width, bool) or not isinstance(width, int):
                raise TypeError(f"hidden_layers must hold ints, got {width!r} in {list(layers)}")
            if width < 1:
                raise ValueError(f"hidden_layers must be positive, got {width} in {list(layers)}")
        for spec in option_fields():
            if spec.name != "hidden_layers":
                _check(spec, getattr(self, spec.name))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a JSON-like mapping; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(data, Mapping):
            raise TypeError(f"config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"unknown TrainConfig key(s): {', '.join(unknown)}")
        values = dict(data)
        if "hidden_layers" in values and isinstance(values["hidden_layers"], list):
            values["hidden_layers"] = tuple(values["hidden_layers"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``hidden_layers`` as a list) that :meth:`from_dict` reads back."""
        data = asdict(self)
        data["hidden_layers"] = list(self.hidden_layers)
        return data

    def network_shape(self, n_features: int, n_classes: int) -> NetworkShape:
        """The output layer and layer sizes this config gives for ``n_features`` inputs and ``n_classes``.

        ``output="auto"`` is a one-unit sigmoid for two classes and softmax otherwise; ``"sigmoid"`` needs
        exactly two classes (``ValueError`` otherwise).
        """
        if self.output == "auto":
            output = "sigmoid" if n_classes == 2 else "softmax"
        elif self.output == "sigmoid" and n_classes != 2:
            raise ValueError(f"output 'sigmoid' needs exactly 2 classes, got {n_classes}")
        else:
            output = self.output
        n_out = 1 if output == "sigmoid" else n_classes
        return NetworkShape(output, [n_features, *self.hidden_layers, n_out])


class NetworkShape(NamedTuple):
    """A network's output layer (``"softmax"`` or ``"sigmoid"``) and ``[n_features, *hidden, n_out]``."""

    output: str
    layer_sizes: list[int]

    @property
    def n_parameters(self) -> int:
        """Number of weights and biases."""
        return sum((n_in + 1) * n_out for n_in, n_out in itertools.pairwise(self.layer_sizes))


@dataclass(frozen=True)
class OptionSpec:
    """One :class:`TrainConfig` field as data: name, type, default, description, choices and bounds.

    ``kind`` is ``bool``, ``int``, ``float``, ``str`` (with ``choices``) or ``tuple`` (``tuple[int, ...]``,
    whose items the bounds apply to); ``nullable`` means ``None`` is allowed too.
    """

    name: str
    kind: type
    nullable: bool
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


@functools.cache
def option_fields() -> tuple[OptionSpec, ...]:
    """Every :class:`TrainConfig` field, in declaration order."""
    hints = get_type_hints(TrainConfig)
    specs = []
    for f in fields(TrainConfig):
        kind = hints[f.name]
        args = get_args(kind)
        nullable = isinstance(kind, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if nullable else kind
        if get_origin(base) is tuple:  # tuple[int, ...]: the bounds apply to the items
            base = tuple
        rule = {key: f.metadata.get(key) for key in ("choices", "ge", "gt", "le", "lt")}
        specs.append(OptionSpec(f.name, base, nullable, f.default, f.metadata["description"], **rule))
    return tuple(specs)


def _check(spec: OptionSpec, value: object) -> None:
    if value is None and spec.nullable:
        return
    if spec.kind is bool:
        _bool(spec.name, value)
    elif spec.kind is str:
        _choice(spec.name, value, spec.choices or ())
    elif spec.kind is int:
        _int(spec.name, value, int(spec.ge if spec.ge is not None else -math.inf))
    else:
        low = spec.gt if spec.gt is not None else spec.ge
        high = spec.lt if spec.lt is not None else spec.le
        _number(
            spec.name,
            value,
            low=-math.inf if low is None else low,
            high=math.inf if high is None else high,
            low_open=spec.gt is not None,
            high_open=spec.lt is not None,
        )
