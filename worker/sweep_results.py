"""The pure part of sweeps: trial configurations from a grid or a random space, and results combined in trial
order (mean and population std over seeds, the leaderboard, the best trial, the trials a halving rung keeps).

Nothing here reads Redis or the clock, and nothing depends on the order in which children finished: the
same inputs give the same outputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.jobstate import ACTIVE_STATUSES, JobStatus

METRICS: dict[str, int] = {"validation_loss": 1, "validation_accuracy": -1}
"""Metric -> sign: the leaderboard sorts by sign * mean (lower loss is better, higher accuracy)."""


def grid_trials(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last option varying fastest (the order the keys are given)."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[name] for name in names))]


def _draw(rng: np.random.Generator, distribution: Mapping[str, Any]) -> Any:
    (kind, argument), = distribution.items()
    if kind == "choice":
        return argument[int(rng.integers(len(argument)))]
    low, high = float(argument[0]), float(argument[1])
    if kind == "uniform":
        return float(rng.uniform(low, high))
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    raise ValueError(f"unknown distribution {kind!r}")


def random_trials(n_trials: int, seed: int, space: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`n_trials` draws from `space` with `np.random.default_rng(seed)`: trial by trial, options in sorted
    name order (so the order of the keys in the request does not change the draws)."""
    rng = np.random.default_rng(seed)
    names = sorted(space)
    return [{name: _draw(rng, space[name]) for name in names} for _ in range(n_trials)]


def halving_epochs(min_epochs: int, eta: int, epochs: int) -> list[int]:
    """Epochs of each rung of synchronous successive halving: min_epochs, x eta, ... up to `epochs`."""
    rungs = [min(min_epochs, epochs)]
    while rungs[-1] < epochs:
        rungs.append(min(rungs[-1] * eta, epochs))
    return rungs


@dataclass(frozen=True)
class Child:
    """One child job as the results need it."""

    job_id: str
    status: str
    metric: float | None = None
    model_id: str | None = None
    error: str | None = None


def _trial_status(children: Sequence[Child]) -> str:
    statuses = {child.status for child in children}
    if statuses & {status.value for status in ACTIVE_STATUSES}:
        started = statuses - {JobStatus.QUEUED.value}
        return JobStatus.RUNNING.value if started else JobStatus.QUEUED.value
    for status in (JobStatus.SUCCEEDED, JobStatus.CANCELED):
        if status.value in statuses:
            return status.value
    return JobStatus.FAILED.value


def trial_result(index: int, overrides: dict[str, Any], seeds: Sequence[int], rung: int, epochs: int,
                 children: Sequence[Child | None]) -> dict[str, Any]:
    """One trial at the last rung it reached: each seed's child, and mean and population std (ddof=0) of the
    metric over the seeds whose child succeeded (None when none did)."""
    present = [child for child in children if child is not None]
    values = [child.metric for child in present if child.status == JobStatus.SUCCEEDED and child.metric is not None]
    mean = float(np.mean(values)) if values else None
    std = float(np.std(values)) if values else None
    return {
        "index": index,
        "overrides": overrides,
        "rung": rung,
        "epochs": epochs,
        "seeds": [
            {
                "seed": seed,
                "job_id": None if child is None else child.job_id,
                "status": None if child is None else child.status,
                "metric": None if child is None else child.metric,
                "model_id": None if child is None else child.model_id,
                "error": None if child is None else child.error,
            }
            for seed, child in zip(seeds, children, strict=True)
        ],
        "mean": mean,
        "std": std,
        "status": _trial_status(present) if present else JobStatus.FAILED.value,
    }


def rank(trials: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Trials with a mean, best first: a later rung first (halving), then sign * mean, then std, then index."""
    sign = METRICS[metric]
    scored = [trial for trial in trials if trial["mean"] is not None]
    return sorted(scored, key=lambda t: (-t["rung"], sign * t["mean"], t["std"], t["index"]))


def best_seed(trial: dict[str, Any], metric: str) -> dict[str, Any]:
    """The trial's succeeded seed with the best metric (ties: the seed listed first)."""
    sign = METRICS[metric]
    done = [
        (sign * entry["metric"], position, entry)
        for position, entry in enumerate(trial["seeds"])
        if entry["status"] == JobStatus.SUCCEEDED and entry["metric"] is not None
    ]
    chosen: dict[str, Any] = min(done, key=lambda item: (item[0], item[1]))[2]
    return chosen


def keep_for_next_rung(trials: Sequence[dict[str, Any]], metric: str, eta: int) -> list[int]:
    """Indices of the trials a halving rung promotes: the best max(1, n // eta) of the n trials that ran the
    rung (by mean over seeds; ties by std, then index), returned in trial order."""
    ranked = rank(trials, metric)
    keep = max(1, len(trials) // eta)
    return sorted(trial["index"] for trial in ranked[:keep])
