"""GET /v1/models/{ref}/export: the model's own npz or an ONNX graph, as an attachment, for its owner only."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import redis
from fastapi.testclient import TestClient

import engine
from tests.service.conftest import blobs_csv, upload_csv
from worker import Store

KEYS = "alice-key-1234:user,bob-key-5678:user"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
JOB = {"hidden_layers": [8, 5], "activation": "tanh", "epochs": 5, "batch_size": 16, "learning_rate": 0.05, "seed": 1}


def _train(client: TestClient, run_worker: Callable[[], None], data: bytes, **extra: Any) -> dict[str, Any]:
    dataset = upload_csv(client, data, headers=ALICE, name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB, **extra}, headers=ALICE)
    assert response.status_code == 202, response.text
    run_worker()
    job: dict[str, Any] = client.get(response.headers["Location"], headers=ALICE).json()
    assert job["status"] == "succeeded", job
    return job


def _rows(data: bytes) -> list[list[float]]:
    reader = csv.reader(io.StringIO(data.decode()))
    next(reader)
    return [[float(value) for value in row[:-1]] for row in reader]


def test_export_onnx_gives_the_service_predictions(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = make_client(api_keys=KEYS)
    data = blobs_csv(n_per_class=30, seed=4)
    job = _train(client, run_worker, data)
    response = client.get("/v1/models/blobs/export", params={"format": "onnx"}, headers=ALICE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == 'attachment; filename="blobs-v1.onnx"'

    rows = _rows(data)  # every row of the dataset, the validation split among them
    served = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": rows}, headers=ALICE).json()
    session = onnxruntime.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"input": np.asarray(rows, dtype=np.float32)})
    assert label.tolist() == served["predictions"]
    np.testing.assert_allclose(probabilities, served["probabilities"], rtol=0, atol=1e-5)


def test_export_npz_is_the_stored_model_for_its_owner_only(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None], redis_url: str, data_dir: Path
) -> None:
    client = make_client(api_keys=KEYS)
    job = _train(client, run_worker, blobs_csv(), output="softmax")
    path = f"/v1/models/{job['model_id']}/export"
    response = client.get(path, params={"format": "npz"}, headers=ALICE)
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="blobs-v1.npz"'
    store = Store(redis.Redis.from_url(redis_url), data_dir / "blobs")
    assert response.content == store.load_model_bytes(job["model_id"])
    assert engine.loads(response.content).classes == [0, 1, 2]
    assert client.get(path, headers=ALICE).content == response.content  # npz is the default

    for other in ({"format": "onnx"}, {"format": "npz"}):
        hidden = client.get(path, params=other, headers=BOB)
        assert hidden.status_code == 404, hidden.text
    assert client.get(path, params={"format": "onnx"}).status_code == 401
    bad = client.get(path, params={"format": "pickle"}, headers=ALICE)
    assert bad.status_code == 422 and "format" in bad.json()["error"]["message"]
    assert client.get("/v1/models/nope/export", headers=ALICE).status_code == 404
