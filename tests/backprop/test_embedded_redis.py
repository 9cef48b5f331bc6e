"""The embedded redis-server: a password from a private file in the data directory, never on a command line."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backprop.embedded_redis import CONFIG_FILE, PASSWORD_FILE, RedisServer, redis_url, stored_password


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / 'a "quoted" dir\\with spaces'  # the config file quotes what it must
    running = RedisServer(directory, persistent=True, password=stored_password(directory))
    running.start()
    yield running
    running.stop()


def test_stored_password_is_private_and_reused(tmp_path: Path) -> None:
    password = stored_password(tmp_path)
    path = tmp_path / PASSWORD_FILE
    assert len(password) == 64 and path.read_text().strip() == password
    assert mode(path) == 0o600
    path.chmod(0o644)
    assert stored_password(tmp_path) == password
    assert mode(path) == 0o600
    assert stored_password(tmp_path / "other") != password


def test_stored_password_replaces_a_file_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / PASSWORD_FILE).write_text("guessable\n")
    password = stored_password(tmp_path)
    assert password != "guessable" and len(password) == 64
    assert mode(tmp_path / PASSWORD_FILE) == 0o600


def test_redis_server_with_password_refuses_clients_without_it(server: RedisServer) -> None:
    assert server.password is not None
    for url in (redis_url(server.port), redis_url(server.port, "wrong-password")):
        with redis.Redis.from_url(url) as client, pytest.raises(redis.AuthenticationError):
            client.ping()
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir") == {"dir": str(server.directory)}


def test_redis_server_password_only_in_a_private_config_file(server: RedisServer) -> None:
    assert server.process is not None and server.password is not None
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
    assert server.password.encode() not in cmdline
    assert server.password not in " ".join(server.command())
    config = server.directory / CONFIG_FILE
    assert server.password in config.read_text()
    assert mode(config) == 0o600
    assert mode(server.directory) == 0o700  # the AOF next to it holds every record
