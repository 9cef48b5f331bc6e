"""The object store dies mid-upload, or stays down past a job's retries: 503s naming the store, nothing half
written ever visible, clean failures, and everything works again once it is back.

Real processes only: `backprop serve` with its blobs in a bucket of `rclone serve s3`, which the tests kill
(SIGKILL, as an outage does) and start again on the same port and directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from botocore.exceptions import ClientError

from backprop.local_stack import LocalStack, wait_until
from backprop.supervisor import descendants
from tests.live import blobs, slow_options
from tests.s3server import S3Server
from tests.test_blob_backends import FAST, bucket_keys, model_weights, submit, upload, wait_epoch, wait_job
from worker.blobs import parse_s3_location
from worker.s3blobs import MULTIPART_BYTES

pytestmark = pytest.mark.slow


@pytest.fixture()
def own_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server of this test alone (the test kills it)."""
    server = S3Server(tmp_path / "s3" / "data").start()
    try:
        yield server
    finally:
        server.stop()


def open_uploads(s3: Any, bucket: str) -> list[tuple[str, int]]:
    """(key, parts received) of every multipart upload the server holds open in `bucket`."""
    try:
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except s3.exceptions.NoSuchUpload:  # rclone's answer when there is none
        return []
    found = []
    for item in uploads:
        with contextlib.suppress(s3.exceptions.NoSuchUpload):  # completed or aborted meanwhile
            parts = s3.list_parts(Bucket=bucket, Key=item["Key"], UploadId=item["UploadId"]).get("Parts", [])
            found.append((str(item["Key"]), len(parts)))
    return found


def freeze_mid_upload(
    s3: Any, bucket: str, uploader: Callable[[], list[int]], ended: Callable[[], bool], *, parts: int, received: int
) -> tuple[str, int] | None:
    """Watch the server until it holds a multipart upload open with at least `received` but fewer than `parts`
    parts, then SIGSTOP the `uploader` processes and look again: an upload still short of its parts cannot
    complete while they are stopped. Returns (key, parts received) with them stopped, or None once `ended()`."""
    while not ended():
        if any(received <= count < parts for _, count in open_uploads(s3, bucket)):
            pids = uploader()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            caught = [(key, count) for key, count in open_uploads(s3, bucket) if count < parts]
            if caught:
                return caught[0]
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    return None


def resume(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def npz_upload(X: np.ndarray, y: np.ndarray) -> dict[str, tuple[str, bytes, str]]:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return {"file": ("wide.npz", buffer.getvalue(), "application/octet-stream")}


def test_s3_killed_mid_multipart_upload_answers_503_and_shows_nothing_half_written(
    tmp_path: Path, own_s3_server: S3Server
) -> None:
    server = own_s3_server
    location = server.new_location("uploads")
    bucket, prefix = parse_s3_location(location)
    s3 = server.client()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200_000, 64), dtype=np.float32)  # 51 MB stored: 7 parts of 8 MiB
    y = np.arange(len(X)) % 3
    parts = X.nbytes // MULTIPART_BYTES  # the upload has at least this many parts
    files = npz_upload(X, y)
    with (
        LocalStack(tmp_path / "var", env={**FAST, **server.env(location)}) as stack,
        httpx.Client(base_url=stack.url, timeout=120) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        api = [stack.child_pid("api")]
        caught = None
        for _ in range(3):  # an upload that finished before the server was seen holding it: try again
            pending = pool.submit(client.post, "/v1/datasets", files=files)
            try:
                caught = freeze_mid_upload(s3, bucket, lambda: api, pending.done, parts=parts, received=1)
                if caught is not None:
                    server.stop()  # killed while the API's upload is open and short of parts
            finally:
                resume(api)
            response = pending.result()
            if caught is not None:
                break
            assert response.status_code == 201, response.text
            assert client.delete(f"/v1/datasets/{response.json()['id']}").status_code == 204
        assert caught is not None, "every upload finished before the server was seen holding it open"
        key, received = caught
        assert key.startswith(f"{prefix}datasets/") and 0 < received < parts

        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "blob_store_unavailable"
        assert bucket in error["message"] and server.endpoint_url in error["message"]
        assert response.headers["Retry-After"]
        assert client.get("/v1/datasets").json()["total"] == 0  # no record of it

        server.start()
        assert bucket_keys(server, location) == []  # no object, whole or partial
        assert open_uploads(s3, bucket) == []
        with pytest.raises(ClientError) as missing:
            s3.head_object(Bucket=bucket, Key=key)
        assert missing.value.response["Error"]["Code"] == "404"
        assert list(server.directory.rglob("*.npz")) == []  # rclone keeps its parts aside, unnamed

        response = client.post("/v1/datasets", files=files)
        assert response.status_code == 201, response.text
        dataset_id = response.json()["id"]
        assert bucket_keys(server, location) == [f"datasets/{dataset_id}.npz"]
        stored = s3.get_object(Bucket=bucket, Key=f"{prefix}datasets/{dataset_id}.npz")
        content = stored["Body"].read()
        assert len(content) > MULTIPART_BYTES
        with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
            np.testing.assert_array_equal(arrays["X"], X)
            np.testing.assert_array_equal(arrays["y"], y)
        job = wait_job(client, submit(client, dataset_id, hidden_layers=[4], epochs=1, batch_size=4096))
        assert job["status"] == "succeeded", job  # the worker read it, checked against its sha256
        stack.stop()


def test_s3_down_past_a_jobs_retries_fails_it_naming_the_store_and_a_new_job_succeeds_after_restart(
    tmp_path: Path, own_s3_server: S3Server
) -> None:
    server = own_s3_server
    location = server.new_location("no-retries")
    bucket, _ = parse_s3_location(location)
    env = {**FAST, **server.env(location), "BACKPROP_BLOB_RETRY_SECONDS": "1", "BACKPROP_JOB_RETRIES": "1"}
    X, y = blobs(n=300)
    with LocalStack(tmp_path / "var", env=env) as stack, httpx.Client(base_url=stack.url, timeout=30) as client:
        dataset_id = upload(client, X, y)
        job_id = submit(client, dataset_id, **{**slow_options(20), "seed": 3})
        wait_epoch(client, job_id, 2)

        server.stop()  # down while the job needs to write its model, and still when its retry loads the dataset
        job = wait_job(client, job_id, timeout=240)
        assert job["status"] == "failed", job
        assert job["attempts"] == 2  # the first run and its one retry
        assert bucket in job["error"] and server.endpoint_url in job["error"], job["error"]
        assert "no retries are left" in job["error"]
        assert job.get("model_id") is None
        assert client.get("/v1/models").json()["total"] == 0

        server.start()
        dataset = client.get(f"/v1/datasets/{dataset_id}")
        assert dataset.status_code == 200, dataset.text
        assert f"datasets/{dataset_id}.npz" in bucket_keys(server, location)
        assert not [name for name in bucket_keys(server, location) if name.startswith("models/")]
        again = wait_job(client, submit(client, dataset_id, **{**slow_options(20), "seed": 3}))
        assert again["status"] == "succeeded", again
        assert [entry["epoch"] for entry in again["history"]] == list(range(1, 21))
        predict = client.post(f"/v1/models/{again['model_id']}/predict", json={"instances": X[:20].tolist()})
        assert predict.status_code == 200, predict.text
        assert np.mean(np.array(predict.json()["predictions"]) == y[:20]) > 0.9
        stack.stop()


def test_s3_killed_mid_model_upload_the_job_retries_and_finishes_after_restart_with_nothing_lost(
    tmp_path: Path, own_s3_server: S3Server
) -> None:
    server = own_s3_server
    location = server.new_location("model-upload")
    bucket, prefix = parse_s3_location(location)
    s3 = server.client()
    env = {
        **FAST,
        **server.env(location),
        "BACKPROP_CHECKPOINT_SECONDS": "3600",  # the model is the job's only multipart upload
        "BACKPROP_BLOB_RETRY_SECONDS": "600",
    }
    options = {"hidden_layers": [2048, 2048], "epochs": 2, "batch_size": 64, "seed": 4}  # a 16 MiB model
    X, y = blobs(n=300)
    with LocalStack(tmp_path / "var", env=env) as stack, httpx.Client(base_url=stack.url, timeout=30) as client:
        dataset_id = upload(client, X, y)
        (worker_pid,) = stack.worker_pids().values()
        job_id = submit(client, dataset_id, **options)
        horse: list[int] = []

        def work_horse() -> list[int]:
            horse[:] = descendants(worker_pid)
            return horse

        def job_ended() -> bool:
            return str(client.get(f"/v1/jobs/{job_id}").json()["status"]) not in ("queued", "running")

        try:
            caught = freeze_mid_upload(s3, bucket, work_horse, job_ended, parts=2, received=0)
            assert caught is not None, "the job stored its model before the server was seen holding the upload"
            server.stop()  # killed while the work-horse's model upload is open and short of parts
        finally:
            resume(horse)
        key, _ = caught
        assert key.startswith(f"{prefix}models/")

        wait_until(lambda: "model: the blob store" in stack.log(), 60, "the model write to be retried")
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        server.start()
        job = wait_job(client, job_id, timeout=240)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1  # the write was retried, not the job
        models = [name for name in bucket_keys(server, location) if name.startswith("models/")]
        assert models == [f"models/{job['model_id']}.npz"]

        again = wait_job(client, submit(client, dataset_id, **options), timeout=240)
        assert again["status"] == "succeeded", again
        for stored, uninterrupted in zip(
            model_weights(client, job["model_id"]), model_weights(client, again["model_id"]), strict=True
        ):
            np.testing.assert_array_equal(stored, uninterrupted)
        stack.stop()
