"""How much memory a training run needs: an estimate from the shapes alone, before any array exists.

The estimate follows what :class:`engine.Training` and a worker around it allocate, phase by phase, and
answers the largest sum of arrays alive at once:

* the data: ``X`` as the worker loaded it, its copy in the training dtype when that differs, the labels,
  their class indices, the split and the per-sample loss statistics;
* the workspace: ``theta``, its gradient and scratch, and one array per optimizer slot (Adam: two,
  momentum / nesterov: one, sgd: none);
* the batch buffers (:meth:`engine.workspace.Buffers.n_elements`), one set per distinct batch size: the
  full training batch, the last partial one, and the same two of the validation pass;
* the largest transient on top: the initial weights (drawn in float64), a checkpoint (a copy of the
  parameters and optimizer slots plus their ``.npz`` bytes), or the finished model and its bytes; the
  best weights of early stopping are kept alongside.

Allocator overheads and NumPy's small temporaries are not counted; sizes that matter are hundreds of
megabytes, where they are noise.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np

from engine.config import TrainConfig
from engine.optimizers import OPTIMIZERS
from engine.trainer import EVAL_ROWS
from engine.workspace import Buffers

_INDEX_BYTES = np.dtype(np.intp).itemsize


class MemoryEstimate(NamedTuple):
    """Bytes of one training run: ``dataset`` (``X`` and ``y`` as loaded) and ``total`` (the peak)."""

    dataset: int
    total: int


def _batch_sizes(n_train: int, n_validation: int, batch_size: int) -> set[int]:
    """Every batch size a run allocates buffers for."""
    sizes = {min(batch_size, n_train), n_train % batch_size if n_train > batch_size else 0}
    if n_validation:
        sizes |= {min(EVAL_ROWS, n_validation), n_validation % EVAL_ROWS if n_validation > EVAL_ROWS else 0}
    return sizes - {0}


def estimate_memory(
    config: TrainConfig, n_samples: int, n_features: int, n_classes: int, *, input_dtype: Any = np.float64
) -> MemoryEstimate:
    """Estimated peak memory of training ``config`` on a dataset of this shape.

    Parameters
    ----------
    config : TrainConfig
    n_samples, n_features, n_classes : int
        Shape of the dataset (``n_classes`` distinct labels).
    input_dtype : dtype-like
        The dtype of ``X`` as it is handed to the trainer (how the dataset is stored).

    Returns
    -------
    MemoryEstimate
        ``total``: the peak in bytes, the dataset included; ``dataset``: the part that is the loaded data.
    """
    if n_samples < 1 or n_features < 1 or n_classes < 2:
        raise ValueError(
            f"need n_samples >= 1, n_features >= 1, n_classes >= 2; got {n_samples}, {n_features}, {n_classes}"
        )
    sizes = config.network_shape(n_features, n_classes).layer_sizes
    item = np.dtype(config.dtype).itemsize
    n_params = sum((n_in + 1) * n_out for n_in, n_out in itertools.pairwise(sizes))
    params = n_params * item
    # The split holds round(fraction * count) rows of each class out, always leaving one per class.
    n_validation = min(int(config.validation_fraction * n_samples + 0.5), max(0, n_samples - n_classes))
    n_train = n_samples - n_validation

    loaded = np.dtype(input_dtype)
    dataset = n_samples * n_features * loaded.itemsize + n_samples * 8
    features = loaded if loaded.kind == "f" else np.dtype(np.float64)
    converted = n_samples * n_features * item if features.itemsize != item else 0
    widened = n_samples * n_features * 8 if loaded.kind != "f" else 0  # check_features' float64 copy
    labels = n_samples * _INDEX_BYTES * 2 + 2 * n_train * item  # class indices, the split, loss statistics
    data = dataset + labels + (converted or widened)

    slots = len(OPTIMIZERS[config.optimizer].slots)
    workspace = (3 + slots) * params
    best = params if config.early_stopping else 0
    batches = _batch_sizes(n_train, n_validation, config.batch_size)
    buffers = item * sum(Buffers.n_elements(m, sizes) for m in batches)

    largest_layer = max(n_in * n_out for n_in, n_out in itertools.pairwise(sizes))
    initial = params + largest_layer * 8 + (widened if converted else 0)
    epoch = 3 * n_train * _INDEX_BYTES + n_train * item + 2 * n_validation * item
    checkpoint = 2 * ((1 + slots) * params + best) + 3 * n_samples * 8
    model = 2 * params
    during = buffers + best + max(epoch, checkpoint, model)
    return MemoryEstimate(dataset=dataset, total=data + workspace + max(initial, during))
