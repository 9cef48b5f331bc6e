"""Batch predictions: submission (dataset or upload), the worker's result streamed as CSV or .npz, cancel,
ownership, and results that outlive their model."""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from fastapi.testclient import TestClient
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.service.conftest import blobs_csv, npz_bytes, upload_csv
from tests.worker.conftest import QUEUE, wait_for, worker_command

REPO_ROOT = Path(__file__).resolve().parents[2]

KEYS = "alice-key-1234:user,bob-key-5678:user"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
JOB = {"hidden_layers": [6], "epochs": 3, "batch_size": 16, "learning_rate": 0.05, "seed": 2}
CHUNK = 7  # rows per chunk: every test result spans several chunks


def _client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=KEYS, prediction_chunk_rows=CHUNK)


def _train(client: TestClient, run_worker: Callable[[], None], data: bytes) -> tuple[str, str]:
    """(dataset id, model id) of a small model trained on `data`."""
    dataset = upload_csv(client, data, headers=ALICE, name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB}, headers=ALICE)
    assert response.status_code == 202, response.text
    run_worker()
    job = client.get(response.headers["Location"], headers=ALICE).json()
    assert job["status"] == "succeeded", job
    return dataset["id"], job["model_id"]


def _features(data: bytes) -> list[list[float]]:
    rows = list(csv.reader(io.StringIO(data.decode())))[1:]
    return [[float(value) for value in row[:-1]] for row in rows]


def _status(client: TestClient, url: str) -> str:
    return str(client.get(url, headers=ALICE).json()["status"])


def _submit(client: TestClient, model_id: str, **kwargs: Any) -> dict[str, Any]:
    response = client.post(f"/v1/models/{model_id}/predictions", headers=ALICE, **kwargs)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/predictions/{response.json()['id']}"
    assert response.json()["status"] == "queued"
    return dict(response.json())


def _finished(client: TestClient, run_worker: Callable[[], None], prediction_id: str) -> dict[str, Any]:
    run_worker()
    record = client.get(f"/v1/predictions/{prediction_id}", headers=ALICE).json()
    assert record["status"] == "succeeded", record
    return dict(record)


def _csv(client: TestClient, prediction_id: str, **params: Any) -> list[list[str]]:
    response = client.get(f"/v1/predictions/{prediction_id}/result", params=params, headers=ALICE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def _npz(client: TestClient, prediction_id: str, **params: Any) -> dict[str, np.ndarray]:
    response = client.get(f"/v1/predictions/{prediction_id}/result", params={"format": "npz", **params}, headers=ALICE)
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def test_batch_prediction_of_a_dataset_equals_predict(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = _client(make_client)
    data = blobs_csv(n_per_class=10, seed=3)
    dataset_id, model_id = _train(client, run_worker, data)
    stored = np.asarray(_features(data), dtype=np.float32).astype(np.float64)  # as the dataset keeps them
    answer = client.post(f"/v1/models/{model_id}/predict", json={"instances": stored.tolist()}, headers=ALICE)
    served = answer.json()

    submitted = _submit(client, model_id, json={"dataset_id": dataset_id})
    assert (submitted["source"], submitted["n_rows"], submitted["dataset_id"]) == ("dataset", 30, dataset_id)
    record = _finished(client, run_worker, submitted["id"])
    assert record["progress"]["rows_done"] == record["progress"]["rows_total"] == 30
    assert record["result_url"] == f"/v1/predictions/{submitted['id']}/result"

    table = _csv(client, submitted["id"])
    assert table[0] == ["prediction", "p_0", "p_1", "p_2"]
    assert [int(row[0]) for row in table[1:]] == served["predictions"]
    np.testing.assert_allclose([[float(v) for v in row[1:]] for row in table[1:]], served["probabilities"], atol=1e-12)

    arrays = _npz(client, submitted["id"])
    assert sorted(arrays) == ["classes", "predictions", "probabilities"]
    assert arrays["classes"].tolist() == served["classes"]
    assert arrays["predictions"].tolist() == served["predictions"]
    np.testing.assert_allclose(arrays["probabilities"], served["probabilities"], atol=1e-12)


def test_batch_prediction_of_an_upload_includes_the_input_on_request(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = _client(make_client)
    data = blobs_csv(n_per_class=8, seed=5)
    _, model_id = _train(client, run_worker, data)
    rows = _features(data)
    served = client.post(f"/v1/models/{model_id}/predict", json={"instances": rows}, headers=ALICE).json()

    with_labels = _submit(client, model_id, files={"file": ("score.csv", data, "text/csv")})
    assert (with_labels["source"], with_labels["n_rows"]) == ("upload", 24)
    _finished(client, run_worker, with_labels["id"])
    table = _csv(client, with_labels["id"], include_input="true")
    assert table[0] == ["x1", "x2", "x3", "prediction", "p_0", "p_1", "p_2"]
    assert [[float(v) for v in row[:3]] for row in table[1:]] == rows
    assert [int(row[3]) for row in table[1:]] == served["predictions"]

    features_only = npz_bytes(X=np.asarray(rows))
    submitted = _submit(client, model_id, files={"file": ("score.npz", features_only, "application/octet-stream")})
    _finished(client, run_worker, submitted["id"])
    arrays = _npz(client, submitted["id"], include_input="true")
    np.testing.assert_array_equal(arrays["X"], np.asarray(rows))
    assert arrays["predictions"].tolist() == served["predictions"]
    assert _csv(client, submitted["id"])[0] == ["prediction", "p_0", "p_1", "p_2"]


def test_batch_prediction_feature_count_mismatch_is_422(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = _client(make_client)
    _, model_id = _train(client, run_worker, blobs_csv(n_per_class=8))
    narrow = upload_csv(client, b"a,b,label\n1,2,0\n3,4,1\n", headers=ALICE).json()
    response = client.post(f"/v1/models/{model_id}/predictions", json={"dataset_id": narrow["id"]}, headers=ALICE)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "wrong_feature_count"
    assert "2 features, the model expects 3" in response.json()["error"]["message"]

    upload = {"file": ("x.csv", b"a,b,c,d,e\n1,2,3,4,5\n", "text/csv")}
    response = client.post(f"/v1/models/{model_id}/predictions", files=upload, headers=ALICE)
    assert response.status_code == 422
    assert "5 feature columns, the model expects 3" in response.json()["error"]["message"]

    bad_cell = {"file": ("x.csv", b"a,b,c\n1,2,3\n4,oops,6\n", "text/csv")}
    response = client.post(f"/v1/models/{model_id}/predictions", files=bad_cell, headers=ALICE)
    assert response.status_code == 422
    assert "oops" in response.json()["error"]["message"]


def test_batch_prediction_of_another_key_is_404(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = _client(make_client)
    dataset_id, model_id = _train(client, run_worker, blobs_csv(n_per_class=8))
    submitted = _submit(client, model_id, json={"dataset_id": dataset_id})
    run_worker()
    base = f"/v1/predictions/{submitted['id']}"
    assert client.get(base, headers=BOB).status_code == 404
    assert client.get(f"{base}/result", headers=BOB).status_code == 404
    assert client.post(f"{base}/cancel", headers=BOB).status_code == 404
    response = client.post(f"/v1/models/{model_id}/predictions", json={"dataset_id": dataset_id}, headers=BOB)
    assert response.status_code == 404
    assert client.get("/v1/predictions/not-an-id", headers=ALICE).status_code == 404


def test_batch_prediction_canceled_while_queued_never_runs(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = _client(make_client)
    dataset_id, model_id = _train(client, run_worker, blobs_csv(n_per_class=8))
    submitted = _submit(client, model_id, json={"dataset_id": dataset_id})
    response = client.post(f"/v1/predictions/{submitted['id']}/cancel", headers=ALICE)
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    run_worker()
    record = client.get(f"/v1/predictions/{submitted['id']}", headers=ALICE).json()
    assert (record["status"], record["progress"], record["result_url"]) == ("canceled", None, None)
    response = client.get(f"/v1/predictions/{submitted['id']}/result", headers=ALICE)
    assert response.status_code == 409
    assert "canceled" in response.json()["error"]["message"]
    assert client.post(f"/v1/predictions/{submitted['id']}/cancel", headers=ALICE).status_code == 409


def test_batch_prediction_result_outlives_its_model_but_not_its_dataset(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = _client(make_client)
    data = blobs_csv(n_per_class=8, seed=1)
    dataset_id, model_id = _train(client, run_worker, data)
    submitted = _submit(client, model_id, json={"dataset_id": dataset_id})
    _finished(client, run_worker, submitted["id"])
    before = _csv(client, submitted["id"])

    assert client.delete(f"/v1/models/{model_id}", headers=ALICE).status_code == 204
    assert client.get(f"/v1/predictions/{submitted['id']}", headers=ALICE).json()["status"] == "succeeded"
    assert _csv(client, submitted["id"]) == before

    assert client.delete(f"/v1/datasets/{dataset_id}", headers=ALICE).status_code == 204
    response = client.get(f"/v1/predictions/{submitted['id']}/result?include_input=true", headers=ALICE)
    assert response.status_code == 404
    assert "was deleted" in response.json()["error"]["message"]
    assert _csv(client, submitted["id"]) == before


def test_batch_prediction_canceled_while_running_keeps_no_result(
    make_client: Callable[..., TestClient], redis_url: str, data_dir: Path
) -> None:
    client = make_client(api_keys=KEYS, prediction_chunk_rows=1, queue_name=QUEUE)
    worker = subprocess.Popen(worker_command(redis_url, data_dir / "blobs", name="batch-cancel"), cwd=REPO_ROOT)
    try:
        data = blobs_csv(n_per_class=8, seed=6)
        dataset = upload_csv(client, data, headers=ALICE, name="blobs").json()
        job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB}, headers=ALICE).json()
        wait_for(lambda: _status(client, f"/v1/jobs/{job['id']}") == "succeeded", timeout=120, what="training")
        model_id = client.get(f"/v1/jobs/{job['id']}", headers=ALICE).json()["model_id"]
        X = np.random.default_rng(0).normal(size=(50_000, 3))
        upload = {"file": ("big.npz", npz_bytes(X=X), "application/octet-stream")}
        submitted = _submit(client, model_id, files=upload)
        url = f"/v1/predictions/{submitted['id']}"
        wait_for(lambda: _status(client, url) == "running", timeout=120, what="the prediction running")
        response = client.post(f"{url}/cancel", headers=ALICE)
        assert response.status_code == 200
        assert response.json()["status"] == "canceled"
        rq_job = Job.fetch(submitted["id"], connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)
        wait_for(lambda: rq_job.get_status(refresh=True) == "finished", timeout=120, what="the work-horse ending")
        assert rq_job.return_value() == {"prediction_id": submitted["id"], "status": "canceled"}
    finally:
        worker.kill()
        worker.wait(timeout=10)
    record = client.get(url, headers=ALICE).json()
    assert record["status"] == "canceled"
    assert record["progress"]["rows_done"] < 50_000
    left = sorted(path.name for path in (data_dir / "blobs" / "predictions").iterdir())
    assert left == [f"{submitted['id']}-input.npz"]  # no result, no temp file


def test_batch_prediction_delete_removes_its_files_once_finished(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None], data_dir: Path
) -> None:
    client = _client(make_client)
    data = blobs_csv(n_per_class=8, seed=7)
    _, model_id = _train(client, run_worker, data)
    submitted = _submit(client, model_id, files={"file": ("score.csv", data, "text/csv")})
    url = f"/v1/predictions/{submitted['id']}"
    response = client.delete(url, headers=ALICE)
    assert response.status_code == 409
    assert "queued" in response.json()["error"]["message"]
    _finished(client, run_worker, submitted["id"])
    folder = data_dir / "blobs" / "predictions"
    assert len(list(folder.iterdir())) == 2  # the uploaded input and the result
    assert client.delete(url, headers=BOB).status_code == 404
    assert client.delete(url, headers=ALICE).status_code == 204
    assert list(folder.iterdir()) == []
    assert client.get(url, headers=ALICE).status_code == 404


def test_batch_prediction_fails_with_a_reason_when_its_model_is_deleted_before_it_runs(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = _client(make_client)
    dataset_id, model_id = _train(client, run_worker, blobs_csv(n_per_class=8))
    submitted = _submit(client, model_id, json={"dataset_id": dataset_id})
    assert client.delete(f"/v1/models/{model_id}", headers=ALICE).status_code == 204
    run_worker()
    record = client.get(f"/v1/predictions/{submitted['id']}", headers=ALICE).json()
    assert record["status"] == "failed"
    assert record["error"] == f"model {model_id} not found (was it deleted?)"
    assert client.get(f"/v1/predictions/{submitted['id']}/result", headers=ALICE).status_code == 409
