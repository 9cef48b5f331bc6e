"""The training loop: minibatches, optimizers, schedules, validation, early stopping, checkpoints.

:class:`Training` is one resumable run (the worker drives it epoch by epoch and checkpoints it with
:meth:`Training.state_bytes`, a packed :class:`engine.TrainingState`); :func:`train` is the simple loop
around it with an ``on_epoch`` callback.

Randomness comes from one ``np.random.Generator`` seeded with ``config.seed``, consumed in a fixed order
(validation split, initial weights, then one permutation per epoch), and its state is part of a
checkpoint -- so a run is reproducible to the bit, and a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.config import TrainConfig
from engine.data import Label, check_features, check_labels, encode_labels, standardisation, stratified_split
from engine.losses import targets
from engine.model import Model
from engine.network import Params, init_params
from engine.optimizers import OPTIMIZERS, Hyperparameters, State, clip_by_global_norm
from engine.serialization import ModelFormatError, TrainingState, json_safe
from engine.workspace import Workspace

Array = NDArray[Any]

EVAL_ROWS = 512
"""Rows per batch of the validation pass (its buffers are sized by it)."""


class TrainingDivergedError(ArithmeticError):
    """The training loss became NaN or infinite; ``epoch`` is the (1-based) epoch where it happened."""

    def __init__(self, epoch: int, loss: float) -> None:
        self.epoch = epoch
        self.loss = loss
        super().__init__(f"training diverged at epoch {epoch}: loss is {loss}; lower the learning_rate")


@dataclass
class EpochMetrics:
    """What one epoch did.

    ``train_loss`` is the objective: mean cross-entropy over the epoch's minibatches (each measured before
    its update) plus the l2 penalty of the end-of-epoch weights. ``validation_loss`` is the plain mean
    cross-entropy on the validation split at the end of the epoch (``None`` without a split).
    """

    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    validation_loss: float | None
    validation_accuracy: float | None
    learning_rate: float
    seconds: float
    samples_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (every field is a number or None, so no deep copy as `asdict` makes: a worker asks
        for it a few times per epoch)."""
        return {name: getattr(self, name) for name in _EPOCH_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


_EPOCH_FIELDS = tuple(f.name for f in fields(EpochMetrics))


@dataclass
class TrainResult:
    """The outcome of a run: ``stop_reason`` is ``"completed"``, ``"early_stopping"`` or ``"callback"``.

    ``best_epoch`` is the epoch with the lowest monitored loss (validation loss, or training loss without
    a validation split); with ``early_stopping`` the model holds that epoch's weights, otherwise the last.
    """

    model: Model
    history: list[EpochMetrics]
    best_epoch: int
    stop_reason: str


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate of (1-based) ``epoch`` under ``config.lr_schedule``."""
    lr = float(config.learning_rate)
    k = epoch - 1
    if config.lr_schedule == "step":
        return lr * config.lr_gamma ** (k // config.lr_step_size)
    if config.lr_schedule == "exponential":
        return lr * config.lr_gamma**k
    if config.lr_schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * k / config.epochs))
    return lr


class Training:
    """One resumable training run.

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
        Raw features (finite numbers).
    y : array-like, shape (n_samples,)
        Class labels, all ints or all strings; at least two distinct ones.
    config : TrainConfig or TrainingState, optional
        A new run's options, or a checkpoint (:meth:`state`) to continue on the same ``X`` and ``y``
        (``ValueError`` if their shape or classes differ).
    init : list of (W, b), optional
        Weights a new run starts from instead of random ones (continue training a model): ``W`` of shape
        ``(n_in, n_out)`` and ``b`` of shape ``(n_out,)`` per layer, exactly the run's layer sizes
        (``ValueError`` naming the first layer that differs). Ignored with a ``TrainingState``, which has
        its own weights.

    Examples
    --------
    >>> run = Training(X, y, TrainConfig(epochs=5))          # doctest: +SKIP
    >>> while not run.finished:                              # doctest: +SKIP
    ...     metrics = run.run_epoch()
    ...     checkpoint = run.state_bytes()
    >>> run = Training.resume(X, y, checkpoint)              # doctest: +SKIP
    >>> model = run.result().model                          # doctest: +SKIP
    """

    def __init__(
        self,
        X: object,
        y: object,
        config: TrainConfig | TrainingState | None = None,
        *,
        init: Params | None = None,
    ) -> None:
        if config is None:
            config = TrainConfig()
        if not isinstance(config, TrainConfig | TrainingState):
            raise TypeError(f"config must be a TrainConfig (or a TrainingState), got {type(config).__name__}")
        features = check_features(X, "X")
        if isinstance(config, TrainingState):
            state = config
            if features.shape != (state.n_samples, state.n_features):
                raise ValueError(
                    f"X has shape {features.shape} but the training state was made on "
                    f"{(state.n_samples, state.n_features)}"
                )
        labels = check_labels(y, features.shape[0], "y")
        classes, y_idx = encode_labels(labels, "y")
        if isinstance(config, TrainConfig):
            state = _new_state(config, features, classes, y_idx)
        elif classes != state.classes:
            raise ValueError(f"y has classes {classes} but the training state was made with {state.classes}")
        self._setup(features, y_idx, state)
        self._restore(state)
        if init is not None and isinstance(config, TrainConfig):
            self._start_from(init)

    def _start_from(self, init: Params) -> None:
        """Replace the freshly drawn weights by ``init`` after checking every shape."""
        if len(init) != len(self._layer_sizes) - 1:
            raise ValueError(
                f"init has {len(init)} layers, the network {self._layer_sizes} has {len(self._layer_sizes) - 1}"
            )
        for index, ((W, b), n_in, n_out) in enumerate(
            zip(init, self._layer_sizes[:-1], self._layer_sizes[1:], strict=True)
        ):
            if np.shape(W) != (n_in, n_out) or np.shape(b) != (n_out,):
                raise ValueError(
                    f"init layer {index}: W {np.shape(W)} and b {np.shape(b)}, the network needs "
                    f"({n_in}, {n_out}) and ({n_out},)"
                )
        self._ws.set_params([(np.asarray(W, self._dtype), np.asarray(b, self._dtype)) for W, b in init])

    def _setup(self, X: Array, y_idx: NDArray[np.intp], state: TrainingState) -> None:
        """The data, the split, the workspace and the optimizer of the run ``state`` describes."""
        config = self._config = state.config
        self._dtype = np.dtype(config.dtype)
        with np.errstate(over="ignore"):  # reported below
            self._X = np.ascontiguousarray(X, dtype=self._dtype)
        if self._X is not X and self._dtype == np.float32 and X.dtype.itemsize > 4:
            try:
                check_features(self._X, "X")
            except ValueError:
                raise ValueError(
                    "X has values beyond float32's range (about 3.4e38); rescale them or use dtype='float64'"
                ) from None
        self._y_idx = y_idx
        self._classes = state.classes
        self._output, self._layer_sizes = config.network_shape(X.shape[1], len(state.classes))
        # Column c is class c's target (one-hot, or the 0/1 of a sigmoid), shape (k, n_classes); a batch's
        # targets are gathered from it, transposed as the workspace keeps them, so no (n_samples, k) target
        # matrix is ever held.
        rows = targets(np.arange(len(state.classes)), len(state.classes), self._output, self._dtype)
        self._Y_cols = np.ascontiguousarray(rows.T)
        self._train_idx = state.train_idx
        self._val_idx = state.val_idx
        self._mean = state.mean
        self._scale = state.scale
        self._mean_d = state.mean.astype(self._dtype)
        self._inv_scale_d = (1.0 / state.scale).astype(self._dtype)
        self._rng = state.rng
        self._ws = Workspace(self._layer_sizes, config.activation, self._output, self._dtype, config.l2)
        self._optimizer = OPTIMIZERS[config.optimizer]
        self._opt_state: State = self._optimizer.init(self._ws.theta)
        self._hp = Hyperparameters(
            momentum=float(config.momentum),
            beta1=float(config.beta1),
            beta2=float(config.beta2),
            epsilon=float(config.epsilon),
            weight_decay=float(config.weight_decay),
            n_decay=self._ws.n_weights,
        )
        n_train = len(state.train_idx)
        self._stat_a = np.empty(n_train, dtype=self._dtype)
        self._stat_b = np.empty(n_train, dtype=self._dtype)

    def _restore(self, state: TrainingState) -> None:
        """Parameters, optimizer slots and counters from ``state`` (new weights when it has none)."""
        if state.theta is None:
            self._ws.set_params(init_params(self._layer_sizes, self._config.activation, self._rng, self._dtype))
        else:
            self._ws.theta[...] = state.theta
        for slot, value in state.opt_state.items():
            self._opt_state[slot][...] = value
        self._best_theta: Array | None = None if state.best_theta is None else state.best_theta.copy()
        self._epoch = state.epoch
        self._step = state.step
        try:
            self._history = [EpochMetrics.from_dict(entry) for entry in state.history]
        except TypeError as exc:
            raise ModelFormatError(f"training state history is invalid: {exc}") from None
        self._best_loss = state.best_loss
        self._best_epoch = state.best_epoch
        self._wait = state.wait
        self._finished = state.finished
        self._stop_reason = state.stop_reason

    # --- public state ----------------------------------------------------------------------------------

    @property
    def config(self) -> TrainConfig:
        """The run's configuration."""
        return self._config

    @property
    def epoch(self) -> int:
        """Number of epochs completed (0 before the first)."""
        return self._epoch

    @property
    def finished(self) -> bool:
        """True once all epochs ran, early stopping triggered, or :meth:`stop` was called."""
        return self._finished

    @property
    def history(self) -> list[EpochMetrics]:
        """Metrics of the completed epochs."""
        return list(self._history)

    @property
    def classes(self) -> list[Label]:
        """Sorted distinct labels."""
        return list(self._classes)

    @property
    def layer_sizes(self) -> list[int]:
        """``[n_features, *hidden_layers, n_out]``."""
        return list(self._layer_sizes)

    @property
    def n_parameters(self) -> int:
        """Number of weights and biases."""
        return int(self._ws.theta.size)

    @property
    def validation_indices(self) -> NDArray[np.intp]:
        """Rows of ``X`` held out for validation, shape (n_validation,) (empty without a split)."""
        return self._val_idx.copy()

    def stop(self, reason: str = "callback") -> None:
        """Finish the run now (the next :meth:`result` reports ``reason``)."""
        if not self._finished:
            self._finished = True
            self._stop_reason = reason

    # --- the loop --------------------------------------------------------------------------------------

    def run_epoch(self) -> EpochMetrics:
        """Train one epoch (one pass over the shuffled training split) and return its metrics.

        Raises
        ------
        TrainingDivergedError
            The epoch's training loss is NaN or infinite.
        RuntimeError
            The run is already finished.
        """
        if self._finished:
            raise RuntimeError("training is finished; call result()")
        config = self._config
        epoch = self._epoch + 1
        lr = learning_rate_at(config, epoch)
        started = time.perf_counter()
        ws = self._ws
        n_train = len(self._train_idx)
        perm = self._train_idx[self._rng.permutation(n_train)]
        with np.errstate(all="ignore"):
            self._run_batches(perm, lr)
            y_perm = self._y_idx[perm] if self._output == "sigmoid" else None
            train_loss, train_accuracy = ws.epoch_loss_and_accuracy(self._stat_a, self._stat_b, y_perm)
            train_loss += ws.penalty()
            if not math.isfinite(train_loss):
                raise TrainingDivergedError(epoch, train_loss)
            val_loss, val_accuracy = self._evaluate(self._val_idx)
        seconds = time.perf_counter() - started
        metrics = EpochMetrics(
            epoch=epoch,
            epochs=config.epochs,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            validation_loss=val_loss,
            validation_accuracy=val_accuracy,
            learning_rate=lr,
            seconds=seconds,
            samples_per_second=n_train / max(seconds, 1e-9),
        )
        self._epoch = epoch
        self._history.append(metrics)
        self._track_best(epoch, train_loss if val_loss is None else val_loss)
        if config.early_stopping and self._wait >= config.patience:
            self.stop("early_stopping")
        elif epoch >= config.epochs:
            self.stop("completed")
        return metrics

    def _run_batches(self, perm: NDArray[np.intp], lr: float) -> None:
        ws = self._ws
        X = self._X
        y_perm = self._y_idx.take(perm)
        mean, inv_scale = self._mean_d, self._inv_scale_d
        standardize = self._config.standardize
        stat_a, stat_b = self._stat_a, self._stat_b
        clip = self._config.clip_norm
        update = self._optimizer.update
        if self._optimizer.linear_in_lr:
            # Fold the learning rate into the backward pass (see Workspace.grad_scale).
            ws.grad_scale, lr = lr, 1.0
            if clip is not None:
                clip *= ws.grad_scale
        else:
            ws.grad_scale = 1.0
        theta, grad, scratch, opt_state, hp = ws.theta, ws.grad, ws.scratch, self._opt_state, self._hp
        step = ws.step
        take_X, take_Y = X.take, self._Y_cols.take  # methods: np.take adds two Python wrappers per call
        n = len(perm)
        batch_size = self._config.batch_size
        t = self._step
        bf = ws.buffers(min(batch_size, n))
        for start in range(0, n, batch_size):
            stop = start + batch_size
            idx = perm[start:stop]
            if stop > n:
                bf = ws.buffers(n - start)
            take_X(idx, axis=0, out=bf.X, mode="clip")
            take_Y(y_perm[start:stop], axis=1, out=bf.YT, mode="clip")
            if standardize:
                bf.X -= mean
                bf.X *= inv_scale
            step(bf, stat_a[start:stop], stat_b[start:stop])
            if clip is not None:
                clip_by_global_norm(grad, clip)
            t += 1
            update(theta, grad, opt_state, t, lr, hp, scratch)
        self._step = t

    def _evaluate(self, rows: NDArray[np.intp]) -> tuple[float | None, float | None]:
        """Mean cross-entropy and accuracy on ``rows`` with the current weights (None, None if empty)."""
        n = len(rows)
        if n == 0:
            return None, None
        ws = self._ws
        stat_a = np.empty(n, dtype=self._dtype)
        stat_b = np.empty(n, dtype=self._dtype)
        for start in range(0, n, EVAL_ROWS):
            idx = rows[start : start + EVAL_ROWS]
            bf = ws.buffers(len(idx))
            np.take(self._X, idx, axis=0, out=bf.X, mode="clip")
            np.take(self._Y_cols, self._y_idx[idx], axis=1, out=bf.YT, mode="clip")
            if self._config.standardize:
                bf.X -= self._mean_d
                bf.X *= self._inv_scale_d
            ws.forward_logits(bf)
            ws.output_stats(bf, stat_a[start : start + EVAL_ROWS], stat_b[start : start + EVAL_ROWS])
        y_rows = self._y_idx[rows] if self._output == "sigmoid" else None
        loss, accuracy = ws.epoch_loss_and_accuracy(stat_a, stat_b, y_rows)
        return (loss if math.isfinite(loss) else float("inf")), accuracy

    def _track_best(self, epoch: int, monitored: float) -> None:
        if self._best_loss is None or monitored < self._best_loss - self._config.min_delta:
            self._best_loss = monitored
            self._best_epoch = epoch
            self._wait = 0
            if self._config.early_stopping:
                if self._best_theta is None:
                    self._best_theta = self._ws.theta.copy()
                else:
                    self._best_theta[...] = self._ws.theta
        else:
            self._wait += 1

    # --- outcome ---------------------------------------------------------------------------------------

    def result(self) -> TrainResult:
        """The trained model and the run's history.

        With ``early_stopping`` the model gets the best epoch's weights. Called before the run finished
        (the caller stopped it), ``stop_reason`` is ``"callback"``.
        """
        use_best = self._config.early_stopping and self._best_theta is not None
        params = self._ws.params(self._best_theta if use_best else None)
        model_epoch = self._best_epoch if use_best else self._epoch
        stop_reason = self._stop_reason or "callback"
        metrics: dict[str, Any] = {
            "epochs_run": self._epoch,
            "best_epoch": self._best_epoch,
            "stop_reason": stop_reason,
            "n_train": len(self._train_idx),
            "n_validation": len(self._val_idx),
        }
        if model_epoch > 0:
            m = self._history[model_epoch - 1]
            metrics.update(
                epoch=model_epoch,
                train_loss=json_safe(m.train_loss),
                train_accuracy=m.train_accuracy,
                validation_loss=json_safe(m.validation_loss),
                validation_accuracy=m.validation_accuracy,
            )
        model = Model(
            params,
            self._config.activation,
            self._output,
            self._classes,
            self._mean,
            self._scale,
            config=self._config.to_dict(),
            history=[h.to_dict() for h in self._history],
            metrics=metrics,
        )
        return TrainResult(model, list(self._history), self._best_epoch, stop_reason)

    # --- checkpoints -----------------------------------------------------------------------------------

    def state(self) -> TrainingState:
        """A copy of everything needed to continue this run (see :class:`engine.TrainingState`)."""
        return TrainingState(
            config=self._config,
            classes=list(self._classes),
            output=self._output,
            n_samples=int(self._X.shape[0]),
            n_features=int(self._X.shape[1]),
            train_idx=self._train_idx.copy(),
            val_idx=self._val_idx.copy(),
            mean=self._mean.copy(),
            scale=self._scale.copy(),
            rng=_copy_rng(self._rng),
            theta=self._ws.theta.copy(),
            opt_state={slot: value.copy() for slot, value in self._opt_state.items()},
            best_theta=None if self._best_theta is None else self._best_theta.copy(),
            epoch=self._epoch,
            step=self._step,
            wait=self._wait,
            best_epoch=self._best_epoch,
            best_loss=self._best_loss,
            finished=self._finished,
            stop_reason=self._stop_reason,
            history=[h.to_dict() for h in self._history],
        )

    def state_bytes(self) -> bytes:
        """:meth:`state` as ``.npz`` bytes (no pickle); :meth:`resume` reads them."""
        return self.state().pack()

    @classmethod
    def resume(cls, X: object, y: object, state: bytes) -> Training:
        """Continue a run from :meth:`state_bytes`, on the same ``X`` and ``y`` it was started with.

        Raises
        ------
        ModelFormatError
            ``state`` is not a valid training state.
        ValueError
            ``X`` / ``y`` do not match the state (shape or classes).
        """
        return cls(X, y, TrainingState.unpack(state))


def train(
    X: object,
    y: object,
    config: TrainConfig | None = None,
    on_epoch: Callable[[EpochMetrics], bool | None] | None = None,
    *,
    init: Params | None = None,
) -> TrainResult:
    """Train a classifier on ``(X, y)``.

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
    y : array-like, shape (n_samples,)
        Int or string labels.
    config : TrainConfig, optional
    on_epoch : callable, optional
        Called with each epoch's :class:`EpochMetrics`; returning ``True`` stops training
        (``stop_reason="callback"``).
    init : list of (W, b), optional
        Starting weights instead of random ones (see :class:`Training`).

    Returns
    -------
    TrainResult
    """
    run = Training(X, y, config, init=init)
    while not run.finished:
        metrics = run.run_epoch()
        if on_epoch is not None and on_epoch(metrics) is True:
            run.stop("callback")
    return run.result()


def _new_state(config: TrainConfig, X: Array, classes: list[Label], y_idx: NDArray[np.intp]) -> TrainingState:
    """The state of a run before its first epoch: the split and standardisation, weights not drawn yet."""
    output = config.network_shape(X.shape[1], len(classes)).output
    rng = np.random.default_rng(config.seed)
    train_idx, val_idx = stratified_split(y_idx, config.validation_fraction, rng)
    if config.standardize:
        mean, scale = standardisation(X, train_idx)
    else:
        mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    return TrainingState(config, classes, output, X.shape[0], X.shape[1], train_idx, val_idx, mean, scale, rng)


def _copy_rng(rng: np.random.Generator) -> np.random.Generator:
    copied = np.random.Generator(type(rng.bit_generator)())
    copied.bit_generator.state = rng.bit_generator.state
    return copied
