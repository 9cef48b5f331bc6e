"""Backprop's engine: a pure-NumPy trainer for fully-connected classifiers.

Public names (the contract in docs/architecture.md): :func:`backprop`, :func:`forward`,
:func:`init_params`, :data:`ACTIVATIONS`, :data:`OPTIMIZERS`, :class:`TrainConfig`, :class:`EpochMetrics`,
:class:`TrainResult`, :class:`Training`, :func:`train`, :class:`Model`, :func:`dumps`, :func:`loads`,
:class:`ModelFormatError`, :class:`TrainingDivergedError`, :class:`TrainingState` (a checkpoint),
:func:`option_fields` / :class:`OptionSpec` (the options as data), :class:`NetworkShape`, :func:`json_safe`,
:func:`evaluation_report`, :data:`METRICS`, :func:`higher_is_better`.
"""

from engine.activations import ACTIVATIONS
from engine.config import NetworkShape, OptionSpec, TrainConfig, option_fields
from engine.metrics import METRICS, evaluation_report, higher_is_better
from engine.model import Model
from engine.network import backprop, forward, init_params
from engine.optimizers import OPTIMIZERS
from engine.serialization import ModelFormatError, TrainingState, dumps, json_safe, loads
from engine.trainer import EpochMetrics, Training, TrainingDivergedError, TrainResult, train

__all__ = [
    "ACTIVATIONS",
    "METRICS",
    "OPTIMIZERS",
    "EpochMetrics",
    "Model",
    "ModelFormatError",
    "NetworkShape",
    "OptionSpec",
    "TrainConfig",
    "TrainResult",
    "Training",
    "TrainingDivergedError",
    "TrainingState",
    "backprop",
    "dumps",
    "evaluation_report",
    "forward",
    "higher_is_better",
    "init_params",
    "json_safe",
    "loads",
    "option_fields",
    "train",
]
