"""The stack on both blob backends, end to end; two hosts that share only Redis and a bucket; S3 outages.

Every test here runs real processes: `backprop serve` (LocalStack), or `backprop api` / `backprop worker`
each with a data directory of its own, and `rclone serve s3` as the object store.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

import engine
from backprop.embedded_redis import RedisServer, free_port
from backprop.local_stack import LocalStack, clean_environment, wait_until
from backprop.supervisor import descendants
from tests.live import blobs, slow_options
from tests.s3server import S3Server
from worker import keys
from worker.blobs import parse_s3_location
from worker.orphans import MARKER_BLOB

pytestmark = pytest.mark.slow

FAST = {
    "BACKPROP_CHECKPOINT_SECONDS": "0",
    "BACKPROP_JOB_MONITORING_INTERVAL": "1",
    "BACKPROP_REAPER_INTERVAL": "1",
    "BACKPROP_PROGRESS_MIN_INTERVAL": "0",
}
BLOB_SUFFIXES = (".npz", ".bin", ".npy")


def stored_blob_files(directory: Path) -> list[str]:
    """Dataset, model and checkpoint files anywhere under `directory`."""
    return sorted(str(path) for path in directory.rglob("*") if path.is_file() and path.suffix in BLOB_SUFFIXES)


def bucket_keys(server: S3Server, location: str) -> list[str]:
    """The stored objects under `location`, but the store's marker (which the API writes at start-up)."""
    bucket, prefix = parse_s3_location(location)
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    keys = (item["Key"][len(prefix) :] for item in listed.get("Contents", []))
    return sorted(key for key in keys if key != MARKER_BLOB)


def upload(client: httpx.Client, X: np.ndarray, y: np.ndarray) -> str:
    response = client.post("/v1/datasets", json={"features": X.tolist(), "labels": y.tolist()})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def submit(client: httpx.Client, dataset_id: str, **options: Any) -> str:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, **options})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_job(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    job: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal job
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job["status"] in ("succeeded", "failed", "canceled")

    wait_until(finished, timeout, f"job {job_id} finished", interval=0.2)
    return job


def wait_epoch(client: httpx.Client, job_id: str, epoch: int, timeout: float = 120) -> None:
    def reached() -> bool:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        return job["status"] == "running" and (job.get("progress") or {}).get("epoch", 0) >= epoch

    wait_until(reached, timeout, f"job {job_id} past epoch {epoch}", interval=0.05)


def batch_predict(client: httpx.Client, model_id: str, X: np.ndarray, timeout: float = 120) -> np.ndarray:
    """The `predictions` of a batch prediction of `X` (uploaded as NPZ), deleted once read."""
    buffer = io.BytesIO()
    np.savez(buffer, X=X)
    upload = {"file": ("score.npz", buffer.getvalue(), "application/octet-stream")}
    response = client.post(f"/v1/models/{model_id}/predictions", files=upload)
    assert response.status_code == 202, response.text
    url = response.headers["Location"]
    wait_until(lambda: client.get(url).json()["status"] in ("succeeded", "failed"), timeout, "batch prediction")
    assert client.get(url).json()["status"] == "succeeded", client.get(url).json()
    result = client.get(f"{url}/result", params={"format": "npz", "include_input": "true"})
    assert result.status_code == 200, result.text
    with np.load(io.BytesIO(result.content), allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["X"], X)
        predictions = np.asarray(arrays["predictions"])
    assert client.delete(url).status_code == 204
    return predictions


def model_weights(client: httpx.Client, model_id: str) -> list[np.ndarray]:
    response = client.get(f"/v1/models/{model_id}/export", params={"format": "npz"})
    assert response.status_code == 200, response.text
    return [array for layer in engine.loads(response.content).params for array in layer]


# --- both backends, end to end ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_blob_backend_upload_train_predict_cancel_resume_delete(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = dict(FAST)
    location = ""
    if backend == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        location = server.new_location("stack")
        env.update(server.env(location))
    data_dir = tmp_path / "var"
    X, y = blobs(n=300)
    with LocalStack(data_dir, env=env) as stack, httpx.Client(base_url=stack.url, timeout=30) as client:
        dataset_id = upload(client, X, y)
        job = wait_job(client, submit(client, dataset_id, hidden_layers=[16], epochs=20, learning_rate=0.01))
        assert job["status"] == "succeeded", job
        response = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": X[:50].tolist()})
        assert response.status_code == 200, response.text
        assert np.mean(np.array(response.json()["predictions"]) == y[:50]) > 0.9
        batch = batch_predict(client, job["model_id"], X[:50])
        assert batch.tolist() == response.json()["predictions"]

        canceled = submit(client, dataset_id, **slow_options(2000))
        wait_epoch(client, canceled, 1)
        assert client.post(f"/v1/jobs/{canceled}/cancel").status_code in (200, 202)
        assert wait_job(client, canceled)["status"] == "canceled"

        # A crash mid-job: the work-horse dies by SIGKILL; the job resumes from its checkpoint.
        crashed = submit(client, dataset_id, **{**slow_options(40), "seed": 5})
        wait_epoch(client, crashed, 3)
        (worker_pid,) = stack.worker_pids().values()
        for pid in descendants(worker_pid):
            os.kill(pid, signal.SIGKILL)
        resumed = wait_job(client, crashed)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["attempts"] >= 2
        assert [entry["epoch"] for entry in resumed["history"]] == list(range(1, 41))

        assert client.delete(f"/v1/models/{resumed['model_id']}").status_code == 204
        assert client.delete(f"/v1/models/{job['model_id']}").status_code == 204
        assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
        stack.stop()

    if backend == "s3":
        assert stored_blob_files(data_dir) == []  # nothing of it on the local disk
        assert bucket_keys(server, location) == []  # deleted, and the checkpoints dropped
    else:
        assert stored_blob_files(data_dir) == []


# --- two hosts: API, worker A and worker B with their own disks -----------------------------------------------
class Hosts:
    """`backprop api` and `backprop worker` processes, each with its own data directory."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def data_dir(self, name: str) -> Path:
        return self.tmp_path / name / "var"

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.data_dir(name).mkdir(parents=True, exist_ok=True)
        env = clean_environment({**self.env, "BACKPROP_DATA_DIR": str(self.data_dir(name))})
        with (self.tmp_path / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "backprop.cli", *args],
                env=env,
                cwd=self.tmp_path / name,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        process = self.processes[name]
        for pid in [process.pid, *descendants(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(10)

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name)


@pytest.fixture()
def hosts(tmp_path: Path, redis_server: RedisServer, redis_url: str, s3_server: S3Server) -> Iterator[Hosts]:
    location = s3_server.new_location("shared")
    port = free_port()
    env = {
        **FAST,
        **s3_server.env(location),
        "REDIS_URL": redis_url,
        "BACKPROP_PORT": str(port),
        "BACKPROP_WORKER_TTL": "15",
    }
    running = Hosts(tmp_path, env)
    running.env["API_URL"] = f"http://127.0.0.1:{port}"
    try:
        yield running
    finally:
        running.stop()


def test_two_hosts_resume_on_another_worker_bit_identical_with_nothing_on_local_disks(
    hosts: Hosts, redis_url: str
) -> None:
    hosts.start("api", "api")
    hosts.start("worker-a", "worker", "--name", "worker-a")
    client = httpx.Client(base_url=hosts.env["API_URL"], timeout=30)

    def api_ready() -> bool:
        assert hosts.processes["api"].poll() is None, hosts.log("api")
        with contextlib.suppress(httpx.TransportError):
            return client.get("/readyz").status_code == 200
        return False

    wait_until(api_ready, 60, "api ready", interval=0.2)
    X, y = blobs(n=300)
    dataset_id = upload(client, X, y)
    options = {**slow_options(30), "seed": 11}
    interrupted = submit(client, dataset_id, **options)
    wait_epoch(client, interrupted, 4)
    with redis.Redis.from_url(redis_url) as conn:
        assert conn.exists(keys.job_checkpoint(interrupted))  # worker A checkpointed to the bucket
    hosts.kill("worker-a")
    epoch_at_kill = client.get(f"/v1/jobs/{interrupted}").json()["progress"]["epoch"]
    assert epoch_at_kill < 30, "the job finished before the kill: make it longer"

    hosts.start("worker-b", "worker", "--name", "worker-b")
    job = wait_job(client, interrupted, timeout=240)
    assert job["status"] == "succeeded", (job, hosts.log("worker-b"))
    assert job["attempts"] >= 2
    assert [entry["epoch"] for entry in job["history"]] == list(range(1, 31))
    assert "resuming from the checkpoint" in hosts.log("worker-b")

    uninterrupted = wait_job(client, submit(client, dataset_id, **options), timeout=240)
    assert uninterrupted["status"] == "succeeded", uninterrupted
    resumed_weights = model_weights(client, job["model_id"])
    for resumed, whole in zip(resumed_weights, model_weights(client, uninterrupted["model_id"]), strict=True):
        np.testing.assert_array_equal(resumed, whole)
    response = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": X[:20].tolist()})
    assert response.status_code == 200, response.text
    client.close()
    for name in ("api", "worker-a", "worker-b"):
        assert stored_blob_files(hosts.tmp_path / name) == [], name


# --- outages of the object store ----------------------------------------------------------------------------
def test_s3_outage_answers_503_and_the_job_finishes_after_restart(tmp_path: Path) -> None:
    server = S3Server(tmp_path / "s3").start()
    location = server.new_location("outage")
    env = {**FAST, **server.env(location), "BACKPROP_BLOB_TIMEOUT": "2", "BACKPROP_BLOB_RETRY_SECONDS": "120"}
    X, y = blobs(n=300)
    try:
        with LocalStack(tmp_path / "var", env=env) as stack, httpx.Client(base_url=stack.url, timeout=30) as client:
            dataset_id = upload(client, X, y)
            small = wait_job(client, submit(client, dataset_id, hidden_layers=[8], epochs=3))
            assert small["status"] == "succeeded", small
            job_id = submit(client, dataset_id, **{**slow_options(60), "seed": 2})
            wait_epoch(client, job_id, 2)

            server.stop()
            response = client.post("/v1/datasets", json={"features": X.tolist(), "labels": y.tolist()})
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "blob_store_unavailable"
            assert location.split("/")[2] in response.json()["error"]["message"]
            cold = client.post(f"/v1/models/{small['model_id']}/predict", json={"instances": X[:5].tolist()})
            assert cold.status_code == 503, cold.text  # never loaded: its weights are in the store
            assert client.get(f"/v1/jobs/{job_id}").json()["status"] in ("running", "succeeded")

            server.start()
            job = wait_job(client, job_id, timeout=240)
            assert job["status"] == "succeeded", job
            assert [entry["epoch"] for entry in job["history"]] == list(range(1, 61))
            again = client.post(f"/v1/models/{small['model_id']}/predict", json={"instances": X[:5].tolist()})
            assert again.status_code == 200, again.text
            assert upload(client, X, y)  # uploads work again
            predict = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": X[:5].tolist()})
            assert predict.status_code == 200, predict.text
            stack.stop()
    finally:
        server.stop()


def test_serve_stops_at_start_naming_the_setting_when_credentials_are_wrong(
    tmp_path: Path, s3_server: S3Server
) -> None:
    env = {**s3_server.env(s3_server.new_location()), "AWS_SECRET_ACCESS_KEY": "not-the-secret-key-000"}
    port = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", "backprop.cli", "serve", "--data-dir", str(tmp_path / "var"), "--port", port],
        env=clean_environment(env),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" in result.stderr
    assert b"not-the-secret-key" not in result.stderr
    assert not (tmp_path / "var").exists()  # nothing was started
