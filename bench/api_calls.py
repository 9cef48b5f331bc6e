"""The HTTP calls the benchmarks make against a stack (upload a dataset, submit a job, wait for it), and
the timing helpers they share. The stack itself is `backprop.local_stack.LocalStack`."""

from __future__ import annotations

import io
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from backprop.local_stack import wait_until

TERMINAL = ("succeeded", "failed", "canceled")


def parse_time(text: str) -> float:
    """Unix seconds of an ISO 8601 timestamp from a job record."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (Linux /proc), 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)


# --- the HTTP calls benchmarks make ----------------------------------------------------------------------
def npz_bytes(X: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def upload_dataset(client: httpx.Client, X: np.ndarray, y: np.ndarray, name: str) -> str:
    """POST the arrays as an NPZ upload; the dataset id."""
    files = {"file": (f"{name}.npz", npz_bytes(X, y), "application/octet-stream")}
    response = client.post("/v1/datasets", files=files)
    if response.status_code != 201:
        raise RuntimeError(f"dataset upload: {response.status_code} {response.text[:300]}")
    return str(response.json()["id"])


def submit_job(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/jobs; the job as returned (status queued)."""
    response = client.post("/v1/jobs", json=spec)
    if response.status_code != 202:
        raise RuntimeError(f"job submission: {response.status_code} {response.text[:300]}")
    return dict(response.json())


def read_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}", params={"history_limit": 10_000})  # the whole history
    response.raise_for_status()
    return dict(response.json())


def wait_for_job(
    client: httpx.Client, job_id: str, timeout: float, interval: float = 0.05
) -> tuple[dict[str, Any], float]:
    """Poll until the job ends; (the job, monotonic time it was first seen ended)."""
    job: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal job
        job = read_job(client, job_id)
        return job["status"] in TERMINAL

    wait_until(ended, timeout, f"job {job_id} finished", interval=interval)
    return job, time.monotonic()


def train_model(client: httpx.Client, X: np.ndarray, y: np.ndarray, spec: dict[str, Any]) -> str:
    """Upload, train (waiting for success) and return the model id."""
    dataset_id = upload_dataset(client, X, y, "bench-model")
    job = submit_job(client, {"dataset_id": dataset_id, **spec})
    done, _ = wait_for_job(client, job["id"], timeout=300)
    if done["status"] != "succeeded":
        raise RuntimeError(f"training the benchmark model failed: {done}")
    return str(done["model_id"])
