"""Reproducibility receipts: what a model was trained from and on, so a worker can retrain it bit for bit.

A receipt holds the dataset's sha256, the full training config and seed, the environment (engine and NumPy
versions, the BLAS library and its thread count), the attempts of the job (which epoch each resumed from)
and the sha256 of the model's weights. `verify` retrains from it with the same BLAS thread count.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

import engine
from worker.blobs import BlobError
from worker.store import Store

RECEIPT_VERSION = 1
ENVIRONMENT_FIELDS = ("engine_version", "numpy_version", "blas_library", "blas_version", "blas_threads", "machine")


def weights_sha256(model: engine.Model) -> str:
    """sha256 over every weight and bias (with dtype and shape) and the standardisation statistics: equal
    exactly when two models compute the same function bit for bit (metadata such as timings is left out)."""
    digest = hashlib.sha256()
    arrays = [array for W, b in model.params for array in (W, b)] + [model.mean, model.scale]
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape};".encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The thread pools of the libraries this process loaded (found once: a worker finds them before it
    forks, and each work-horse asks them for their thread counts)."""
    return ThreadpoolController()


@functools.cache
def _engine_version() -> str:
    try:
        return version("backprop")
    except PackageNotFoundError:
        return "unknown"


def _blas() -> dict[str, Any]:
    """The BLAS NumPy uses (threadpoolctl's view of the loaded libraries, thread counts as they are now)."""
    for entry in _threadpools().info():
        if entry.get("user_api") == "blas":
            return {
                "blas_library": entry.get("internal_api"),
                "blas_version": entry.get("version"),
                "blas_threads": entry.get("num_threads"),
            }
    return {"blas_library": None, "blas_version": None, "blas_threads": None}


def environment() -> dict[str, Any]:
    """The parts of this process that can change floating-point results."""
    return {
        "engine_version": _engine_version(),
        "numpy_version": np.__version__,
        **_blas(),
        "machine": platform.machine(),
    }


def environment_differs(recorded: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The environment fields whose recorded value differs from this process': {field, recorded, current}."""
    return [
        {"field": name, "recorded": recorded.get(name), "current": current.get(name)}
        for name in ENVIRONMENT_FIELDS
        if recorded.get(name) != current.get(name)
    ]


def build_receipt(
    *,
    dataset_id: str,
    dataset_sha256: str,
    config: dict[str, Any],
    attempts: list[dict[str, Any]],
    model: engine.Model,
    parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The receipt of a model trained in this process (JSON-safe)."""
    return {
        "receipt_version": RECEIPT_VERSION,
        "dataset_id": dataset_id,
        "dataset_sha256": dataset_sha256,
        "config": dict(config),
        "seed": config.get("seed"),
        "environment": environment(),
        "attempts": list(attempts),
        "parent": parent,
        "weights_sha256": weights_sha256(model),
    }


def parent_model(store: Store, model_id: str) -> tuple[engine.Model, dict[str, Any]]:
    """The model a continued training starts from and its part of the receipt ({model_id, weights_sha256});
    ValueError when it was deleted or its blob is unusable."""
    try:
        model = engine.loads(store.load_model_bytes(model_id))
    except (BlobError, LookupError, ValueError) as exc:  # NotFoundError is a LookupError
        raise ValueError(f"init_model {model_id} is gone or unusable ({exc})") from None
    return model, {"model_id": model_id, "weights_sha256": weights_sha256(model)}
