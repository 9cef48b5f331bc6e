"""Fixtures of the worker tests: a store on the session Redis and a configured worker runtime."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from worker import Store, configure
from worker.runtime import WorkerConfig

QUEUE = "test-training"


@pytest.fixture()
def blob_dir(data_dir: Path) -> Path:
    """The blob directory inside this test's data directory."""
    return data_dir / "blobs"


@pytest.fixture()
def store(redis_conn: redis.Redis, blob_dir: Path) -> Store:
    """A Store on the flushed session Redis."""
    return Store(redis_conn, blob_dir)


@pytest.fixture()
def runtime_config(blob_dir: Path) -> WorkerConfig:
    """This process configured as a worker (in-process burst workers fork from it)."""
    return configure(blob_dir, checkpoint_seconds=0.0, progress_min_interval=0.0, job_monitoring_interval=1)


def blobs_dataset(seed: int = 0, n: int = 120, n_features: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs: a tiny dataset that trains in milliseconds."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(3, n_features))
    y = np.arange(n) % 3
    X = centers[y] + rng.normal(size=(n, n_features))
    return X, y


def worker_command(
    redis_url: str, blob_dir: Path, *, name: str, checkpoint_seconds: float = 0.0, running_limit: int = 0
) -> list[str]:
    """A subprocess running `worker.run_worker` (1 s heartbeats) on the test queue, logging to stderr."""
    code = (
        "import logging, sys; from pathlib import Path; from worker import run_worker; "
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
        f"run_worker({redis_url!r}, queue_name={QUEUE!r}, blobs=Path({str(blob_dir)!r}), "
        f"worker_ttl=15, job_monitoring_interval=1, checkpoint_seconds={checkpoint_seconds!r}, "
        f"progress_min_interval=0.0, name={name!r}, running_limit={running_limit!r})"
    )
    return [sys.executable, "-c", code]


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `predicate` every 10 ms until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture()
def worker_process(redis_url: str, blob_dir: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start subprocess workers (`start(name, running_limit=0)`); all are killed at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, running_limit: int = 0) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            worker_command(redis_url, blob_dir, name=name, running_limit=running_limit),
            stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            for child in children(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            process.kill()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
