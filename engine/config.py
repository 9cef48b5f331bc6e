"""``TrainConfig``: every training hyperparameter, validated, JSON-safe."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

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


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (all defaulted; invalid values raise on construction).

    ``output="auto"`` means a one-unit sigmoid for two classes and softmax otherwise. ``weight_decay`` is
    decoupled weight decay (AdamW; used by ``adam`` only), separate from the ``l2`` penalty in the loss.
    ``lr_schedule`` changes the learning rate per epoch: ``step`` multiplies it by ``lr_gamma`` every
    ``lr_step_size`` epochs, ``exponential`` every epoch, ``cosine`` anneals it over ``epochs``.
    ``clip_norm`` clips the gradient's global L2 norm. ``min_delta`` is the improvement of the monitored
    loss (validation loss, or training loss without a validation split) that resets ``patience``.
    """

    hidden_layers: tuple[int, ...] = (100,)
    activation: str = "relu"
    output: str = "auto"
    epochs: int = 200
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0
    l2: float = 1e-4
    lr_schedule: str = "constant"
    lr_step_size: int = 10
    lr_gamma: float = 0.5
    clip_norm: float | None = None
    validation_fraction: float = 0.1
    early_stopping: bool = False
    patience: int = 10
    min_delta: float = 1e-4
    seed: int = 0
    dtype: str = "float32"
    standardize: bool = True

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
        _choice("activation", self.activation, sorted(ACTIVATIONS))
        _choice("output", self.output, OUTPUT_CHOICES)
        _int("epochs", self.epochs, 1)
        _int("batch_size", self.batch_size, 1)
        _choice("optimizer", self.optimizer, sorted(OPTIMIZERS))
        _number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        _number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _number("beta1", self.beta1, low=0.0, high=1.0, high_open=True)
        _number("beta2", self.beta2, low=0.0, high=1.0, high_open=True)
        _number("epsilon", self.epsilon, low=0.0, low_open=True)
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("l2", self.l2, low=0.0)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _int("lr_step_size", self.lr_step_size, 1)
        _number("lr_gamma", self.lr_gamma, low=0.0, high=1.0, low_open=True)
        if self.clip_norm is not None:
            _number("clip_norm", self.clip_norm, low=0.0, low_open=True)
        _number("validation_fraction", self.validation_fraction, low=0.0, high=1.0, high_open=True)
        _bool("early_stopping", self.early_stopping)
        _int("patience", self.patience, 1)
        _number("min_delta", self.min_delta, low=0.0)
        _int("seed", self.seed, 0)
        _choice("dtype", self.dtype, DTYPE_CHOICES)
        _bool("standardize", self.standardize)

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
