"""Redis goes away: the API answers 503 with a clear message (never hangs or 500s) and recovers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backprop.embedded_redis import RedisServer
from service.main import create_app
from service.settings import Settings
from tests.service.conftest import blobs_csv, upload_csv


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test alone, so it can be killed."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_down_gives_503_and_recovers(
    own_redis: RedisServer, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=own_redis.url, data_dir=data_dir, redis_timeout=0.5, reaper_interval=0.05)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        dataset_id = upload_csv(client, blobs_csv(n_per_class=3)).json()["id"]
        own_redis.kill()

        requests = [
            ("GET", f"/v1/datasets/{dataset_id}", None),
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/jobs", {"dataset_id": dataset_id}),
            ("POST", "/v1/models/x/predict", {"instances": [[1.0]]}),
        ]
        for method, path, body in requests:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "redis_unavailable"
            assert "Redis" in error["message"]
        upload = upload_csv(client, blobs_csv(n_per_class=3))
        assert upload.status_code == 503
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] is False
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "backprop_redis_up 0.0" in metrics.text

        # the reaper (in the app's lifespan) logs its failures and keeps going
        deadline = time.monotonic() + 10
        while "reaper failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "reaper failed" in caplog.text

        own_redis.start()  # same port and AOF directory
        assert client.get(f"/v1/datasets/{dataset_id}").status_code == 200

        # a Redis that accepts connections but never answers: socket timeouts, not a hang
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            hung = client.get(f"/v1/datasets/{dataset_id}")
            assert hung.status_code == 503 and hung.json()["error"]["code"] == "redis_unavailable"
            assert client.get("/readyz").status_code == 503
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        assert client.get(f"/v1/datasets/{dataset_id}").status_code == 200
        assert client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code == 202
