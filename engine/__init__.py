"""Backprop's engine: a pure-NumPy trainer for fully-connected classifiers.

Public names (the contract in docs/architecture.md): :func:`backprop`, :func:`forward`,
:func:`init_params`, :data:`ACTIVATIONS`, :data:`OPTIMIZERS`, :class:`TrainConfig`, :class:`EpochMetrics`,
:class:`TrainResult`, :class:`Training`, :func:`train`, :class:`Model`, :func:`dumps`, :func:`loads`,
:class:`ModelFormatError`, :class:`TrainingDivergedError`, :func:`evaluation_report`, :data:`METRICS`,
:func:`higher_is_better`.
"""

from engine.activations import ACTIVATIONS
from engine.config import TrainConfig
from engine.metrics import METRICS, evaluation_report, higher_is_better
from engine.model import Model
from engine.network import backprop, forward, init_params
from engine.optimizers import OPTIMIZERS
from engine.serialization import ModelFormatError, dumps, loads
from engine.trainer import EpochMetrics, Training, TrainingDivergedError, TrainResult, train

__all__ = [
    "ACTIVATIONS",
    "METRICS",
    "OPTIMIZERS",
    "EpochMetrics",
    "Model",
    "ModelFormatError",
    "TrainConfig",
    "TrainResult",
    "Training",
    "TrainingDivergedError",
    "backprop",
    "dumps",
    "evaluation_report",
    "forward",
    "higher_is_better",
    "init_params",
    "loads",
    "train",
]
