"""A Backprop stack for benchmarks: `backprop serve` as a subprocess on a free loopback port, and the HTTP
calls the benchmarks make against it (upload a dataset, submit a job, wait for it).

The stack is started as `make run` starts it (embedded Redis, RQ workers, the API, supervised), with a
fresh environment (no BACKPROP_* or REDIS_URL from the caller's shell) plus the settings a benchmark asks for.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from service.embedded_redis import free_port
from service.supervisor import descendants

BACKPROP = Path(sys.executable).with_name("backprop")  # the console script beside the venv's python
CONFIG_VARIABLES = ("REDIS_URL", "LOG_FORMAT", "LOG_LEVEL")
TERMINAL = ("succeeded", "failed", "canceled")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process' environment without any Backprop configuration, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("BACKPROP_") and key.upper() not in CONFIG_VARIABLES
    }
    env.update(extra)
    return env


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


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


class Stack:
    """`backprop serve --host 127.0.0.1 --port <free> --data-dir <dir> --workers N`, output in a log file."""

    def __init__(self, data_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.env = clean_environment(**(env or {}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.stop()
            except RuntimeError:
                self.kill()

    @property
    def argv(self) -> list[str]:
        return [
            str(BACKPROP),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait until /readyz answers 200 and every worker is registered."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"backprop serve exited with {process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code != 200:
                    return False
                scrape = httpx.get(f"{self.url}/metrics", timeout=2.0).text
            except httpx.TransportError:
                return False
            return f"backprop_workers_alive {float(self.workers)}" in scrape

        wait_until(ready, timeout, f"backprop serve ready on {self.url}", interval=0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        """The supervisor's status file: each child's pid and restart count."""
        return dict(json.loads((self.data_dir / "serve.json").read_text()))

    def child_pid(self, name: str) -> int:
        pid = self.status()["children"][name]["pid"]
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        return int(pid)

    def worker_pids(self) -> dict[str, int]:
        """Worker child name -> pid, for the workers that are running."""
        children = self.status()["children"]
        return {
            name: int(child["pid"])
            for name, child in children.items()
            if name.startswith("worker-") and child["pid"] is not None
        }

    def redis_url(self) -> str:
        """The embedded Redis' URL, from the redis-server command line (the status file has no URL)."""
        # redis-server rewrites its title to `redis-server 127.0.0.1:<port>`; before that it is the argv.
        title = Path(f"/proc/{self.child_pid('redis')}/cmdline").read_bytes().decode().replace("\0", " ")
        found = re.search(r"127\.0\.0\.1:(\d+)", title) or re.search(r"--port (\d+)", title)
        if found is None:
            raise RuntimeError(f"no port in the redis-server command line {title!r}")
        return f"redis://127.0.0.1:{found.group(1)}/0"

    def api_environment(self) -> dict[str, str]:
        """The environment `backprop serve` gives its API child (for a second server on the same data)."""
        env = dict(self.env)
        env.update(REDIS_URL=self.redis_url(), BACKPROP_DATA_DIR=str(self.data_dir.resolve()), PYTHONUNBUFFERED="1")
        return env

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT to serve (Ctrl-C), which stops its children in order; wait."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"backprop serve did not stop within {timeout:.0f}s") from exc

    def kill(self) -> None:
        """SIGKILL serve and everything under it."""
        if self.process is None:
            return
        for pid in reversed([self.process.pid, *descendants(self.process.pid)]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


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
