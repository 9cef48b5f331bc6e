"""Receipts, validation reports, POST /v1/models/{ref}/verify and evaluations queued as jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import engine
from tests.service.conftest import blobs_csv, upload_csv
from worker.receipts import weights_sha256

KEYS = "alice-key-1234:user,bob-key-5678:user"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
JOB = {"hidden_layers": [6], "activation": "tanh", "epochs": 4, "batch_size": 8, "learning_rate": 0.03, "seed": 11}


@pytest.fixture()
def trained(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> tuple[TestClient, dict[str, Any]]:
    client = make_client(api_keys=KEYS, max_predict_rows=20)
    dataset = upload_csv(client, blobs_csv(n_per_class=20, seed=3), headers=ALICE, name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB}, headers=ALICE)
    assert response.status_code == 202, response.text
    run_worker()
    job = client.get(response.headers["Location"], headers=ALICE).json()
    assert job["status"] == "succeeded", job
    model: dict[str, Any] = client.get(f"/v1/models/{job['model_id']}", headers=ALICE).json()
    return client, model


def test_model_has_receipt_and_validation_report(trained: tuple[TestClient, dict[str, Any]]) -> None:
    client, model = trained
    receipt = model["receipt"]
    assert receipt["config"] == model["config"] and receipt["seed"] == 11
    assert len(receipt["dataset_sha256"]) == 64 and receipt["dataset_id"] == model["dataset_id"]
    assert receipt["environment"]["numpy_version"] == np.__version__
    assert receipt["environment"]["blas_threads"] >= 1
    assert [attempt["from_epoch"] for attempt in receipt["attempts"]] == [0]
    blob = client.get(f"/v1/models/{model['id']}/export", headers=ALICE).content
    assert receipt["weights_sha256"] == weights_sha256(engine.loads(blob))
    report = model["validation_report"]
    assert report["n_samples"] == 6  # 10 % of 60 rows, stratified
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 6
    assert set(report) >= {"accuracy", "log_loss", "macro_f1", "per_class", "calibration", "unknown_labels"}
    assert "receipt" not in client.get("/v1/models", headers=ALICE).json()["items"][0]


def test_verify_retrains_bit_for_bit(
    trained: tuple[TestClient, dict[str, Any]], run_worker: Callable[[], None]
) -> None:
    client, model = trained
    response = client.post("/v1/models/blobs/verify", headers=ALICE)
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "verify" and response.json()["status"] == "queued"
    run_worker()
    job = client.get(response.headers["Location"], headers=ALICE).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["verification"]["match"] is True
    results = client.get(f"/v1/models/{model['id']}/verifications", headers=ALICE).json()
    assert results["total"] == 1
    result = results["items"][0]
    assert result["match"] is True
    assert result["weights_sha256"] == result["expected_sha256"] == model["receipt"]["weights_sha256"]
    assert result["environment_differs"] == [] and result["checksum"]["ok"] is True
    assert client.post(f"/v1/models/{model['id']}/verify", headers=BOB).status_code == 404
    assert client.get(f"/v1/models/{model['id']}/verifications", headers=BOB).status_code == 404


def test_verify_tampered_blob_fails_its_checksum(
    trained: tuple[TestClient, dict[str, Any]], run_worker: Callable[[], None], data_dir: Path
) -> None:
    client, model = trained
    path = data_dir / "blobs" / "models" / f"{model['id']}.npz"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    assert client.post(f"/v1/models/{model['id']}/verify", headers=ALICE).status_code == 202
    run_worker()
    result = client.get(f"/v1/models/{model['id']}/verifications", headers=ALICE).json()["items"][0]
    assert result["match"] is False
    assert result["checksum"]["ok"] is False
    assert "checksum" in result["checksum"]["message"]
    assert result["weights_sha256"] == result["expected_sha256"]  # retraining still reproduces the receipt
    assert any("checksum" in problem for problem in result["problems"])


def test_evaluate_above_max_predict_rows_is_a_job(
    trained: tuple[TestClient, dict[str, Any]], run_worker: Callable[[], None]
) -> None:
    client, model = trained
    dataset = upload_csv(client, blobs_csv(n_per_class=10, seed=5), headers=ALICE).json()  # 30 rows > 20
    response = client.post("/v1/models/blobs/evaluate", json={"dataset_id": dataset["id"]}, headers=ALICE)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "evaluate" and job["config"] == {"model_id": model["id"]}
    run_worker()
    done = client.get(response.headers["Location"], headers=ALICE).json()
    assert done["status"] == "succeeded", done
    stored = client.get(f"/v1/models/{model['id']}/evaluations", headers=ALICE).json()
    assert stored["total"] == 1
    assert stored["items"][0]["n_samples"] == 30
    assert stored["items"][0]["id"] == done["result"]["evaluation"]["id"]
    small = upload_csv(client, blobs_csv(n_per_class=5, seed=6), headers=ALICE).json()  # 15 rows
    assert client.post("/v1/models/blobs/evaluate", json={"dataset_id": small["id"]}, headers=ALICE).status_code == 200


def test_verify_without_the_training_dataset_is_422(trained: tuple[TestClient, dict[str, Any]]) -> None:
    client, model = trained
    assert client.delete(f"/v1/datasets/{model['dataset_id']}", headers=ALICE).status_code == 204
    response = client.post(f"/v1/models/{model['id']}/verify", headers=ALICE)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "dataset_gone"
    assert model["dataset_id"] in response.json()["error"]["message"]
