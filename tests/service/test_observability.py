"""/healthz, /readyz, /metrics and the access log."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from tests.service.conftest import blobs_csv, upload_csv
from worker import Store
from worker.attempts import Attempts


def _value(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_metrics_report_jobs_queue_predictions_cache_and_statuses(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=5), name="m").json()["id"]
    done = client.post("/v1/jobs", json={"dataset_id": dataset_id, "hidden_layers": [4], "epochs": 3}).json()
    run_worker()
    client.post("/v1/jobs", json={"dataset_id": dataset_id, "hidden_layers": [4], "epochs": 3})
    model_id = client.get(f"/v1/jobs/{done['id']}").json()["model_id"]
    for _ in range(3):
        assert (
            client.post(f"/v1/models/{model_id}/predict", json={"instances": [[0.0] * 3]}).status_code == 200
        )
    client.get("/v1/datasets/missing")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _value(text, "backprop_redis_up") == 1
    assert _value(text, "backprop_jobs", '{status="succeeded"}') == 1
    assert _value(text, "backprop_jobs", '{status="queued"}') == 1
    assert _value(text, "backprop_queue_depth") == 1
    assert _value(text, "backprop_workers_alive") == 0
    assert _value(text, "backprop_epochs_trained") == 3
    assert _value(text, "backprop_training_samples_per_second") == 0
    assert _value(text, "backprop_prediction_requests_total") == 3
    assert _value(text, "backprop_prediction_latency_seconds_count") == 3
    assert _value(text, "backprop_model_cache_misses_total") == 1
    assert _value(text, "backprop_model_cache_hits_total") == 2
    assert _value(text, "backprop_http_responses_total", '{status="404"}') == 1
    assert _value(text, "backprop_http_responses_total", '{status="202"}') == 2
    assert "_created" not in text  # no creation-time series doubling the output


def test_metrics_report_running_jobs_throughput(client: TestClient, redis_conn: redis.Redis, data_dir: Path) -> None:
    store = Store(redis_conn, data_dir / "blobs")
    attempts = Attempts(redis_conn)
    for samples_per_second in (120.0, 30.5):
        job = store.create_job({}, owner=None, dataset_id="d", name="j")
        token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
        progress = {"epoch": 1, "samples_per_second": samples_per_second}
        attempts.write(job.id, token, {"progress": progress}, [{"epoch": 1}])
    text = client.get("/metrics").text
    assert _value(text, "backprop_jobs", '{status="running"}') == 2
    assert _value(text, "backprop_training_samples_per_second") == 150.5
    assert _value(text, "backprop_epochs_trained") == 2


def test_healthz_and_readyz_without_worker(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "redis": True, "workers": 0}


def test_readyz_with_a_live_worker(client: TestClient, redis_url: str, data_dir: Path) -> None:
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    connection = redis.Redis.from_url(redis_url)
    worker = Worker(
        [Queue("training", connection=connection, serializer=JSONSerializer)], connection=connection
    )
    worker.register_birth()  # type: ignore[no-untyped-call]
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "redis": True, "workers": 1}
    finally:
        worker.register_death()  # type: ignore[no-untyped-call]
        connection.close()


def test_access_log_json_line_per_request(
    make_client: Callable[..., TestClient], capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(log_format="json")
    capfd.readouterr()
    client.get("/v1/datasets/nope")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "service.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["method"] == "GET" and entry["path"] == "/v1/datasets/nope" and entry["status"] == 404
    assert entry["duration_ms"] >= 0
    assert entry["level"] == "INFO" and "time" in entry


def test_openapi_documents_errors_and_examples(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    operations = {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert ("POST", "/v1/models/{model_id}/predict") in operations
    for (method, path), operation in operations.items():
        if path.startswith("/v1/"):
            assert "503" in operation["responses"], (method, path)  # 401 only with keys: see test_auth
        if "{" in path:
            assert "404" in operation["responses"], (method, path)
    create_job = operations[("POST", "/v1/jobs")]
    assert {"422", "429", "503"} <= set(create_job["responses"])
    assert "Location" in create_job["responses"]["202"]["headers"]
    upload = operations[("POST", "/v1/datasets")]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(upload)
    schemas = spec["components"]["schemas"]
    assert schemas["JobCreate"]["examples"] and schemas["PredictCreate"]["examples"]
    assert schemas["JobCreate"]["additionalProperties"] is False
    assert "sha256" not in schemas["ModelPublic"]["properties"]
    assert "owner" not in schemas["DatasetPublic"]["properties"]


def test_metrics_public_carry_no_model_name_or_id_and_do_not_grow_per_model(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4), name="owner-secret-data").json()["id"]
    model_ids = []
    for name in ("owner-secret-a", "owner-secret-b"):
        client.post("/v1/jobs", json={"dataset_id": dataset_id, "name": name, "hidden_layers": [4], "epochs": 1})
    run_worker()
    for name in ("owner-secret-a", "owner-secret-b"):
        model = client.get(f"/v1/models/{name}").json()
        model_ids.append(model["id"])
        assert client.post(f"/v1/models/{name}/predict", json={"instances": [[0.0] * 3]}).status_code == 200
    text = client.get("/metrics").text
    for secret in ("owner-secret", dataset_id, *model_ids):
        assert secret not in text
    series = [line for line in text.splitlines() if line.startswith("backprop_prediction")]
    assert _value(text, "backprop_prediction_requests_total") == 2

    client.delete(f"/v1/models/{model_ids[0]}")
    after = client.get("/metrics").text
    assert [line for line in after.splitlines() if line.startswith("backprop_prediction")] == series
