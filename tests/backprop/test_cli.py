"""The `backprop` command's configuration handling and argument parsing."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backprop import cli
from backprop.embedded_redis import free_port
from backprop.local_stack import clean_environment, wait_until
from service.settings import Settings, get_settings, is_loopback
from tests.processes import listening_addresses

BACKPROP = Path(sys.executable).with_name("backprop")


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Backprop variables from the calling shell; the cached settings re-read around each test."""
    for name in list(os.environ):
        if name.upper().startswith("BACKPROP_") or name.upper() in ("REDIS_URL", "LOG_FORMAT", "LOG_LEVEL"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_bad_setting_exits_2_naming_the_variable() -> None:
    result = subprocess.run(
        [str(BACKPROP), "worker"],
        env=clean_environment({"BACKPROP_PORT": "70000"}),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "BACKPROP_PORT: Input should be less than or equal to 65535" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["serve"], ["api"], ["worker"]])
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT: Input should be 'text' or 'json'"),
        ("BACKPROP_LOG_FORMAT", "xml", "BACKPROP_LOG_FORMAT: Input should be 'text' or 'json'"),
        ("BACKPROP_WORKER_TTL", "5", "BACKPROP_WORKER_TTL: Input should be greater than or equal to 15"),
        ("BACKPROP_MAX_ROWS", "many", "BACKPROP_MAX_ROWS: Input should be a valid integer"),
    ],
)
def test_cli_names_the_variable_that_is_set(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_does_not_echo_a_bad_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKPROP_API_KEYS", "hunter2-very-secret")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["api"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "BACKPROP_API_KEYS:" in err
    assert "hunter2" not in err


def test_cli_rejects_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--port", "70000"])
    assert exit_info.value.code == 2
    assert "70000 is not a port" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "values", "refused"),
    [
        ("0.0.0.0", {}, True),
        ("192.168.1.10", {}, True),
        ("::", {"allow_no_auth": "false"}, True),
        ("0.0.0.0", {"api_keys": "k:user"}, False),
        ("0.0.0.0", {"allow_no_auth": "true"}, False),
        ("127.0.0.1", {}, False),
        ("localhost", {}, False),
    ],
)
def test_settings_open_access_refusal(host: str, values: dict[str, str], refused: bool) -> None:
    refusal = Settings.model_validate(values).open_access_refusal(host)
    assert (refusal is not None) is refused
    if refusal is not None:
        assert host in refusal and "BACKPROP_API_KEYS" in refusal and "BACKPROP_ALLOW_NO_AUTH=true" in refusal


@pytest.mark.parametrize("command", ["api", "serve"])
def test_cli_refuses_a_public_address_without_api_keys(tmp_path: Path, command: str) -> None:
    port = free_port()
    result = subprocess.run(
        [str(BACKPROP), command, "--host", "0.0.0.0", "--port", str(port)],
        env=clean_environment({"BACKPROP_DATA_DIR": str(tmp_path / "var")}),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr
    assert "BACKPROP_API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()  # nothing was started
    assert listening_addresses(port) == set()


@pytest.mark.parametrize(
    ("env", "warned"),
    [({"BACKPROP_API_KEYS": "k:admin"}, False), ({"BACKPROP_ALLOW_NO_AUTH": "true"}, True)],
)
def test_cli_api_listens_on_every_interface_with_keys_or_when_allowed(
    tmp_path: Path, redis_url: str, env: dict[str, str], warned: bool
) -> None:
    port = free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BACKPROP), "api", "--host", "0.0.0.0", "--port", str(port)],
            env=clean_environment({**env, "REDIS_URL": redis_url, "BACKPROP_DATA_DIR": str(tmp_path / "var")}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def listening() -> bool:
            assert process.poll() is None, log_path.read_text()
            return bool(listening_addresses(port))

        wait_until(listening, 60, f"backprop api listening on port {port}")
        assert listening_addresses(port) == {"0.0.0.0"}
    finally:
        process.terminate()
        process.wait(30)
    assert ("anyone who can reach 0.0.0.0 has full access" in log_path.read_text()) is warned


def test_redact_url_hides_the_password() -> None:
    assert cli.redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert cli.redact_url("redis://user:s3cret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert cli.redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_cli_serve_refuses_a_data_dir_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (tmp_path / cli.LOCK_FILE).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["serve", "--data-dir", str(tmp_path), "--port", "8999"])
    assert exit_info.value.code == 1
    assert "another `backprop serve` is using" in capsys.readouterr().err
