"""The pure part of sweeps: trials from a grid or a random space, statistics and ranking in trial order."""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from worker.runtime import pin_blas_threads
from worker.sweep_results import (
    Child,
    grid_trials,
    halving_epochs,
    keep_for_next_rung,
    random_trials,
    rank,
    trial_result,
)


def test_grid_trials_vary_the_last_option_fastest() -> None:
    trials = grid_trials({"a": [1, 2], "b": ["x", "y", "z"]})
    assert trials[:4] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}, {"a": 2, "b": "x"}]
    assert len(trials) == 6


def test_random_trials_same_seed_same_draws_whatever_the_key_order() -> None:
    space: dict[str, Any] = {
        "lr": {"log_uniform": [1e-4, 1e-1]},
        "h": {"choice": [[8], [16, 8]]},
        "l2": {"uniform": [0, 1]},
    }
    first = random_trials(6, 3, space)
    assert first == random_trials(6, 3, dict(reversed(space.items())))
    assert first != random_trials(6, 4, space)
    assert all(1e-4 <= t["lr"] <= 1e-1 and t["h"] in ([8], [16, 8]) and 0 <= t["l2"] <= 1 for t in first)


def test_halving_epochs_multiply_by_eta_up_to_the_epochs() -> None:
    assert halving_epochs(10, 3, 60) == [10, 30, 60]
    assert halving_epochs(2, 2, 8) == [2, 4, 8]
    assert halving_epochs(5, 2, 5) == [5]


def _trial(index: int, metrics: list[float | None], rung: int = 0) -> dict[str, Any]:
    children = [
        Child(f"job{index}-{n}", "succeeded" if value is not None else "failed", value, f"m{index}-{n}")
        for n, value in enumerate(metrics)
    ]
    return trial_result(index, {"i": index}, list(range(len(metrics))), rung, 10, children)


def test_trial_result_mean_and_population_std_over_succeeded_seeds() -> None:
    trial = _trial(0, [0.5, 0.7, None])
    assert trial["mean"] == float(np.mean([0.5, 0.7])) and trial["std"] == float(np.std([0.5, 0.7]))
    assert trial["status"] == "succeeded"
    assert _trial(1, [None, None])["mean"] is None and _trial(1, [None])["status"] == "failed"


def test_rank_by_mean_then_std_then_index_and_later_rungs_first() -> None:
    trials = [_trial(0, [0.3, 0.5]), _trial(1, [0.4, 0.4]), _trial(2, [0.4, 0.4]), _trial(3, [0.9], rung=1)]
    assert [t["index"] for t in rank(trials, "validation_loss")] == [3, 1, 2, 0]
    assert [t["index"] for t in rank(trials, "validation_accuracy")] == [3, 1, 2, 0]
    flat = [_trial(0, [0.1]), _trial(1, [0.9]), _trial(2, [0.5])]
    assert [t["index"] for t in rank(flat, "validation_accuracy")] == [1, 2, 0]


def test_keep_for_next_rung_keeps_the_best_nth_in_trial_order() -> None:
    trials = [_trial(0, [0.9]), _trial(1, [0.1]), _trial(2, [0.5]), _trial(3, [0.2]), _trial(4, [None])]
    assert keep_for_next_rung(trials, "validation_loss", 2) == [1, 3]
    assert keep_for_next_rung(trials[:1], "validation_loss", 3) == [0]


def test_pin_blas_threads_limits_the_blas_pools() -> None:
    before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    with threadpool_limits(limits=None):
        try:
            assert pin_blas_threads(1) == 1
            assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == {1}
        finally:
            threadpool_limits(limits=max(before), user_api="blas")
    assert pin_blas_threads(0) == max(before)
