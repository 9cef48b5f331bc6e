"""End to end, as a user would: `backprop serve` (what `make run` starts), digits over HTTP, stop, restart."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from backprop.embedded_redis import redis_url
from backprop.local_stack import LocalStack, wait_until
from tests.processes import listening_addresses, pid_alive

pytestmark = pytest.mark.slow


@pytest.fixture()
def stacks() -> Iterator[list[LocalStack]]:
    """Stacks a test starts; whatever is still running at the end is killed."""
    started: list[LocalStack] = []
    yield started
    for stack in started:
        stack.close()


def start_stack(stacks: list[LocalStack], data_dir: Path, **options: Any) -> LocalStack:
    stack = LocalStack(data_dir, **options)
    stacks.append(stack)
    stack.start()
    return stack


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    return X_train, X_test, y_train, y_test


def to_csv(X: np.ndarray, y: np.ndarray) -> bytes:
    out = io.StringIO()
    out.write(",".join([f"pixel{i}" for i in range(X.shape[1])] + ["digit"]) + "\n")
    for row, label in zip(X.astype(int), y, strict=True):
        out.write(",".join(map(str, row)) + f",{label}\n")
    return out.getvalue().encode()


def wait_for_job(client: httpx.Client, location: str, timeout: float) -> dict[str, Any]:
    job: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal job
        job = client.get(location).json()
        return job["status"] in ("succeeded", "failed", "canceled")

    wait_until(finished, timeout, f"job {location} finished", interval=0.2)
    return job


def predict(client: httpx.Client, model_id: str, X: np.ndarray) -> dict[str, Any]:
    response = client.post(f"/v1/models/{model_id}/predict", json={"instances": X.tolist()})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_e2e_digits_train_predict_survives_restart(tmp_path: Path, stacks: list[LocalStack]) -> None:
    data_dir = tmp_path / "var"
    X_train, X_test, y_train, y_test = digits_split()
    stack = start_stack(stacks, data_dir)
    assert "docs at http://127.0.0.1:" in stack.log()

    with httpx.Client(base_url=stack.url, timeout=30.0) as client:
        upload = {"file": ("digits.csv", to_csv(X_train, y_train), "text/csv")}
        response = client.post("/v1/datasets", files=upload)
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert (dataset["n_samples"], dataset["n_features"]) == (len(X_train), 64)
        labels, counts = np.unique(y_train, return_counts=True)
        assert dataset["classes"] == {str(k): int(v) for k, v in zip(labels, counts, strict=True)}

        spec = {"dataset_id": dataset["id"], "hidden_layers": [64], "optimizer": "adam", "epochs": 30}
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        job = wait_for_job(client, response.headers["location"], timeout=120)
        assert job["status"] == "succeeded", job
        assert len(job["history"]) == 30

        first = predict(client, job["model_id"], X_test)
        accuracy = float(np.mean(np.array(first["predictions"]) == y_test))
        assert accuracy >= 0.95, accuracy

    tree = stack.tree()
    assert len(tree) >= 4  # supervisor, redis, worker, api
    assert stack.stop(signal.SIGINT) == 0
    assert [pid for pid in tree if pid_alive(pid)] == []  # serve returns only once its children are gone
    # Ctrl-C reached serve alone (children run in their own sessions), which stopped them in order.
    stopping = [
        line.split("stopping ", 1)[1] for line in stack.log().splitlines() if "supervisor: stopping" in line
    ]
    assert stopping == ["api", "worker-1", "redis"]
    assert not (data_dir / "serve.json").exists()

    again = start_stack(stacks, data_dir)
    with httpx.Client(base_url=again.url, timeout=30.0) as client:
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
        assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 200
        second = predict(client, job["model_id"], X_test)
    assert second["predictions"] == first["predictions"]
    assert second["probabilities"] == first["probabilities"]
    assert again.stop(signal.SIGTERM) == 0


def test_e2e_serve_restarts_killed_worker_and_stays_on_loopback(tmp_path: Path, stacks: list[LocalStack]) -> None:
    # No API keys configured: the default address is loopback only (a public one is refused, see test_cli).
    stack = start_stack(stacks, tmp_path / "var", workers=2)
    assert listening_addresses(stack.port) == {"127.0.0.1"}

    before = stack.status()["children"]
    os.kill(before["worker-1"]["pid"], signal.SIGKILL)

    def restarted() -> bool:
        worker = stack.status()["children"]["worker-1"]
        return worker["pid"] not in (None, before["worker-1"]["pid"]) and pid_alive(worker["pid"])

    wait_until(restarted, 5.0, "serve restarted the SIGKILLed worker")  # within 5 s, as promised
    after = stack.status()["children"]
    assert after["worker-1"]["restarts"] == before["worker-1"]["restarts"] + 1
    assert after["worker-2"] == before["worker-2"]  # the other worker was left alone
    assert after["api"] == before["api"]
    wait_until(lambda: httpx.get(f"{stack.url}/readyz").status_code == 200, 30, "ready again")
    assert stack.stop(signal.SIGINT) == 0


def test_e2e_serve_restarts_killed_redis_without_losing_data(tmp_path: Path, stacks: list[LocalStack]) -> None:
    stack = start_stack(stacks, tmp_path / "var")
    dataset = {"features": [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.2, 0.9]], "labels": ["a", "b", "a", "b"]}
    response = httpx.post(f"{stack.url}/v1/datasets", json=dataset, timeout=30)
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]

    before = stack.status()["children"]["redis"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        redis = stack.status()["children"]["redis"]
        return redis["pid"] not in (None, before["pid"]) and pid_alive(redis["pid"])

    wait_until(restarted, 5.0, "serve restarted the SIGKILLed redis-server")  # within 5 s, as promised
    wait_until(lambda: httpx.get(f"{stack.url}/readyz").status_code == 200, 30, "ready again")
    # The AOF under the data directory brought the dataset back.
    response = httpx.get(f"{stack.url}/v1/datasets/{dataset_id}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == dataset_id
    assert stack.stop(signal.SIGINT) == 0


def test_e2e_serve_uses_external_redis_when_redis_url_is_set(
    tmp_path: Path, stacks: list[LocalStack], redis_url: str
) -> None:
    stack = start_stack(stacks, tmp_path / "var", env={"REDIS_URL": redis_url})
    status = stack.status()
    assert status["redis"] == "external"
    assert set(status["children"]) == {"worker-1", "api"}
    assert not (tmp_path / "var" / "redis").exists()
    response = httpx.post(f"{stack.url}/v1/datasets", json={"features": [[0.0], [1.0]], "labels": [0, 1]})
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    with redis.Redis.from_url(redis_url) as client:  # the stack keeps its records in the Redis it was given
        assert list(client.scan_iter(match=f"*{dataset_id}*"))
    assert stack.stop(signal.SIGINT) == 0


def test_e2e_serve_embedded_redis_needs_its_password_kept_off_command_lines(
    tmp_path: Path, stacks: list[LocalStack]
) -> None:
    data_dir = tmp_path / "var"
    stack = start_stack(stacks, data_dir)
    password_file = data_dir / "redis" / "password"
    password = password_file.read_text().strip()
    assert len(password) == 64 and stat.S_IMODE(password_file.stat().st_mode) == 0o600
    port = int(stack.status()["redis_port"])

    # `ps` shows every command line to every local user: serve, redis-server, the workers and the API
    # carry no password there. The API and the workers get it in their environment (private to this user).
    for pid in stack.tree():
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert password not in listing
    for child in ("api", "worker-1"):
        environment = Path(f"/proc/{stack.child_pid(child)}/environ").read_bytes().split(b"\0")
        assert f"REDIS_URL={redis_url(port, password)}".encode() in environment

    # Another local user knows the port (ps shows it), not the password: Redis refuses them.
    with redis.Redis(port=port, socket_timeout=5) as client, pytest.raises(redis.AuthenticationError):
        client.ping()
    with redis.Redis.from_url(stack.redis_url(), socket_timeout=5) as client:
        assert client.ping()
    response = httpx.post(f"{stack.url}/v1/datasets", json={"features": [[0.0], [1.0]], "labels": [0, 1]})
    assert response.status_code == 201, response.text
    assert stack.stop(signal.SIGINT) == 0

    # The same data directory keeps its password across restarts.
    again = start_stack(stacks, data_dir)
    assert password_file.read_text().strip() == password
    assert httpx.get(f"{again.url}/v1/datasets/{response.json()['id']}").status_code == 200
    assert again.stop(signal.SIGINT) == 0
