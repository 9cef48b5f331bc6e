"""A throwaway Backprop stack from Python: `backprop serve` as a subprocess on a free loopback port.

    with LocalStack(workers=2) as stack:
        httpx.get(f"{stack.url}/v1/jobs")

The stack runs as `make run` starts it (embedded Redis unless `env` sets REDIS_URL, RQ workers, the API,
supervised), in a fresh environment: no BACKPROP_* or REDIS_URL from the caller's shell, only what the
caller passes. Without a `data_dir` it lives in a temporary directory that is removed when it stops.
Used by the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from backprop.embedded_redis import free_port, stored_password
from backprop.embedded_redis import redis_url as embedded_redis_url
from backprop.supervisor import descendants

CONFIG_VARIABLES = ("REDIS_URL", "LOG_FORMAT", "LOG_LEVEL")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process' environment without any Backprop configuration (as a fresh shell has it), plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("BACKPROP_") and key.upper() not in CONFIG_VARIABLES
    }
    env.update(extra or {})
    return env


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


def _get(url: str) -> tuple[int, str]:
    """Status and body of GET `url` (our own local API); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (urllib.error.URLError, OSError, ValueError):
        return 0, ""


def serve_command() -> list[str]:
    """The `backprop` console script beside this Python (as `make install` puts it), else `python -m`."""
    script = Path(sys.executable).with_name("backprop")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "backprop.cli"]


class LocalStack:
    """`backprop serve --host H --port <free> --data-dir D --workers N`, its output in a log file.

    `api_keys` maps each API key to its role ("user" or "admin"); `env` adds settings (BACKPROP_*, or
    REDIS_URL for an external Redis). `start()` (or entering the context) returns once /readyz answers 200
    and all `workers` have a live heartbeat; `stop()` (or leaving the context) sends SIGTERM, waits, and
    kills whatever is left after `stop_timeout`.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        workers: int = 1,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        api_keys: Mapping[str, str] | None = None,
        ready_timeout: float = 90.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self._temp_root = None if data_dir is not None else Path(tempfile.mkdtemp(prefix="backprop-stack-"))
        self.data_dir = Path(data_dir) if data_dir is not None else self._root / "var"
        self.workers = workers
        self.host = host
        extra = dict(env or {})
        if api_keys:
            extra["BACKPROP_API_KEYS"] = ",".join(f"{key}:{role}" for key, role in api_keys.items())
        self.env = clean_environment(extra)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port = free_port()
        url_host = "127.0.0.1" if host in WILDCARD_HOSTS else (f"[{host}]" if ":" in host else host)
        self.url = f"http://{url_host}:{self.port}"
        self.log_path = self._root / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def _root(self) -> Path:
        return self._temp_root if self._temp_root is not None else self.data_dir.parent

    @property
    def argv(self) -> list[str]:
        return [
            *serve_command(),
            "serve",
            *("--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir)),
            *("--workers", str(self.workers)),
        ]

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self.stop()
        finally:
            self.close()

    def start(self) -> None:
        """Start `backprop serve` and wait until it is ready; RuntimeError if it exits first."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self.ready, self.ready_timeout, f"backprop serve ready on {self.url}", interval=0.1)

    def ready(self) -> bool:
        """/readyz answers 200 and every worker has a heartbeat; RuntimeError if serve has exited."""
        process = self.process
        if process is None:
            return False
        if process.poll() is not None:
            raise RuntimeError(f"backprop serve exited with {process.returncode}:\n{self.log()[-3000:]}")
        if _get(f"{self.url}/readyz")[0] != 200:
            return False
        status, scrape = _get(f"{self.url}/metrics")
        return status == 200 and f"backprop_workers_alive {float(self.workers)}" in scrape

    def stop(self, signum: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """Signal serve's process group (as Ctrl-C in its terminal does) and wait; serve's exit status.

        serve stops its children in order before it exits. If it has not exited within `timeout`
        (default `stop_timeout`), everything under it is killed and TimeoutError raised.
        """
        process = self.process
        if process is None:
            raise RuntimeError("the stack was never started")
        if process.poll() is None:
            os.killpg(process.pid, signum)
        try:
            return process.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise TimeoutError(f"backprop serve did not stop within {exc.timeout:.0f}s:\n{self.log()[-3000:]}") from exc

    def kill(self) -> None:
        """SIGKILL serve and every process under it."""
        for pid in reversed(self.tree()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def close(self) -> None:
        """Kill whatever still runs and remove the temporary directory, if this stack made one."""
        self.kill()
        if self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)

    def tree(self) -> list[int]:
        """serve's pid and every process under it, while serve runs."""
        if self.process is None or self.process.poll() is not None:
            return []
        return [self.process.pid, *descendants(self.process.pid)]

    def log(self) -> str:
        """What serve and its children printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        """The supervisor's status file: each child's pid and restart count."""
        return dict(json.loads((self.data_dir / "serve.json").read_text()))

    def child_pid(self, name: str) -> int:
        """The pid of child `name` ("api", "redis", "worker-1", ...); RuntimeError if it is not running."""
        pid = self.status()["children"][name]["pid"]
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        return int(pid)

    def worker_pids(self) -> dict[str, int]:
        """Worker child name -> pid, for the workers that are running."""
        return {
            name: int(child["pid"])
            for name, child in self.status()["children"].items()
            if name.startswith("worker-") and child["pid"] is not None
        }

    def redis_url(self) -> str:
        """The embedded Redis' URL with its password: the port from the status file, the password from
        the data directory (the status file holds no secret)."""
        port = self.status().get("redis_port")
        if port is None:
            raise RuntimeError("this stack has no embedded Redis")
        return embedded_redis_url(int(port), stored_password(self.data_dir / "redis"))

    def api_environment(self) -> dict[str, str]:
        """The environment serve gives its API child (to run a second server on the same data)."""
        env = dict(self.env)
        if "REDIS_URL" not in env:
            env["REDIS_URL"] = self.redis_url()
        env.update(BACKPROP_DATA_DIR=str(self.data_dir.resolve()), PYTHONUNBUFFERED="1")
        return env
