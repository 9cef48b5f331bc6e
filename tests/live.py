"""A real HTTP server for tests that stream (uvicorn in a thread), and RQ workers as subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from backprop.embedded_redis import free_port
from service.main import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class ApiServer:
    """`create_app(settings)` served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=30, what="uvicorn to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def api_server(settings: Settings) -> Iterator[ApiServer]:
    server = ApiServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def worker_command(settings: Settings, *, name: str) -> list[str]:
    """A subprocess running `worker.run_worker` for these settings (1 s heartbeats, a checkpoint per epoch,
    every epoch written), logging to stderr."""
    code = (
        "import logging, sys; from pathlib import Path; from worker import run_worker; "
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
        f"run_worker({settings.redis_url!r}, queue_name={settings.queue_name!r}, "
        f"blobs={settings.blob_location!r}, worker_ttl=15, job_monitoring_interval=1, "
        f"checkpoint_seconds=0.0, progress_min_interval=0.0, name={name!r})"
    )
    return [sys.executable, "-c", code]


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


class Processes:
    """Subprocesses a test starts; whatever still runs at the end is SIGKILLed with its children."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        environment = {**os.environ, **(env or {})}
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)
        log.close()
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                for child in children(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                process.kill()
            process.wait(timeout=10)


def blobs(n: int = 300, n_features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(3, n_features))
    y = np.arange(n) % 3
    return centers[y] + rng.normal(size=(n, n_features)), y


def slow_options(epochs: int) -> dict[str, Any]:
    """Job options whose epochs take a noticeable time on the blobs (small batches)."""
    return {"hidden_layers": [32], "epochs": epochs, "batch_size": 4, "validation_fraction": 0.0}
