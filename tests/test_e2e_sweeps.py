"""Sweeps end to end: `backprop serve --workers N` and the Python client; the same result on one worker and two."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from backprop import Client
from backprop.local_stack import LocalStack, wait_until

pytestmark = pytest.mark.slow

# The same worker environment on both stacks: one BLAS thread per worker.
ENV = {"BACKPROP_BLAS_THREADS": "1", "BACKPROP_REAPER_INTERVAL": "1"}
SPEC: dict[str, Any] = {
    "base": {"hidden_layers": [6], "epochs": 6, "batch_size": 16, "validation_fraction": 0.25},
    "grid": {"learning_rate": [0.00002, 0.05, 0.002], "l2": [0.0, 0.01]},
    "seeds": [0, 1],
    "early_stop": {"type": "halving", "min_epochs": 2, "eta": 2},
}


def _blobs(n_per_class: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    centers = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 0.0], [0.0, 2.0, 2.0]])
    X = np.concatenate([rng.normal(center, 0.9, size=(n_per_class, 3)) for center in centers])
    return X, np.repeat(np.arange(3), n_per_class)


@pytest.fixture(scope="module")
def two_workers() -> Iterator[LocalStack]:
    with LocalStack(workers=2, env=ENV) as stack:
        yield stack


def _run(stack: LocalStack) -> dict[str, Any]:
    with Client(stack.url) as client:
        dataset = client.upload_dataset(_blobs(), name="blobs")
        sweep = client.sweep(dataset, name="e2e", **SPEC).wait(progress=False, timeout=240)
        jobs = [job.data for job in client.jobs()]
    assert sweep.status == "succeeded", sweep.data
    assert sweep.leaderboard()[0]["index"] == sweep.best["trial"]  # type: ignore[index]
    assert {job["sweep_id"] for job in jobs} == {sweep.id}
    assert {job["blas_threads"] for job in jobs} == {1}
    return sweep.data


def _comparable(sweep: dict[str, Any]) -> dict[str, Any]:
    """Everything of the result but ids and times."""
    trials = [
        {**trial, "seeds": [(seed["seed"], seed["status"], seed["metric"]) for seed in trial["seeds"]]}
        for trial in sweep["trials"]
    ]
    best = {key: value for key, value in sweep["best"].items() if key not in ("model_id", "job_id")}
    return {"trials": trials, "leaderboard": sweep["leaderboard"], "best": best, "rungs": sweep["rungs"]}


def test_sweep_e2e_same_result_with_one_worker_and_two(two_workers: LocalStack) -> None:
    with_two = _run(two_workers)
    with LocalStack(workers=1, env=ENV) as one_worker:
        with_one = _run(one_worker)
    assert [len(rung["trials"]) for rung in with_two["rungs"]] == [6, 3, 1]
    assert with_two["counts"]["succeeded"] == 6 * 2 + 3 * 2 + 1 * 2
    assert _comparable(with_two) == _comparable(with_one)
    means = [(row["mean"], row["std"], row["index"]) for row in with_two["leaderboard"][3:]]
    assert means == sorted(means)  # trials stopped at the first rung, ranked among themselves


def test_sweep_e2e_cancel_stops_every_child(two_workers: LocalStack) -> None:
    X, y = _blobs(200)
    spec = {
        "base": {"hidden_layers": [64, 64], "epochs": 5000, "batch_size": 4},
        "grid": {"learning_rate": [0.001, 0.002, 0.003]},
        "seeds": [0, 1],
    }
    with Client(two_workers.url) as client:
        sweep = client.sweep(client.upload_dataset((X, y)), name="cancel", **spec)
        wait_until(lambda: sweep.refresh().data["counts"]["running"] >= 1, 60, "a child running")
        sweep.cancel()
        assert sweep.status == "canceled"
        sweep.wait(progress=False, timeout=120)
        children = [job.data for job in client.jobs() if job.data["sweep_id"] == sweep.id]
    assert len(children) == 6 and {child["status"] for child in children} == {"canceled"}
    assert sweep.data["counts"]["canceled"] == 6 and sweep.best is None
