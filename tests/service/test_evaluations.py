"""POST /v1/models/{ref}/evaluate and GET /evaluations: reports checked against scikit-learn on the
service's own predictions."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn import metrics as sk

from tests.service.conftest import blobs_csv, upload_csv

KEYS = "alice-key-1234:user,bob-key-5678:user"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
JOB = {"hidden_layers": [4], "activation": "tanh", "epochs": 3, "batch_size": 16, "learning_rate": 0.02, "seed": 5}


def _rows_and_labels(data: bytes) -> tuple[list[list[float]], list[int]]:
    reader = csv.reader(io.StringIO(data.decode()))
    next(reader)
    rows = list(reader)
    return [[float(v) for v in row[:-1]] for row in rows], [int(row[-1]) for row in rows]


@pytest.fixture()
def trained(make_client: Callable[..., TestClient], run_worker: Callable[[], None]) -> tuple[TestClient, str]:
    client = make_client(api_keys=KEYS)
    dataset = upload_csv(client, blobs_csv(n_per_class=25, seed=8), headers=ALICE, name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB}, headers=ALICE)
    assert response.status_code == 202, response.text
    run_worker()
    job = client.get(response.headers["Location"], headers=ALICE).json()
    assert job["status"] == "succeeded", job
    return client, str(job["model_id"])


def test_evaluate_report_matches_sklearn_on_the_service_predictions(trained: tuple[TestClient, str]) -> None:
    client, model_id = trained
    data = blobs_csv(n_per_class=20, seed=9)
    dataset = upload_csv(client, data, headers=ALICE).json()
    response = client.post("/v1/models/blobs/evaluate", json={"dataset_id": dataset["id"]}, headers=ALICE)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    rows, y = _rows_and_labels(data)
    served = client.post(f"/v1/models/{model_id}/predict", json={"instances": rows}, headers=ALICE).json()
    classes, predicted, P = served["classes"], served["predictions"], np.asarray(served["probabilities"])
    assert report["model_id"] == model_id and report["n_samples"] == 60
    assert len(report["dataset_sha256"]) == 64 and report["dataset_id"] == dataset["id"]
    assert report["confusion_matrix"] == {
        "labels": classes,
        "matrix": sk.confusion_matrix(y, predicted, labels=classes).tolist(),
    }
    assert abs(report["accuracy"] - sk.accuracy_score(y, predicted)) <= 1e-9
    assert abs(report["log_loss"] - sk.log_loss(y, P, labels=classes)) <= 1e-9
    assert abs(report["macro_f1"] - sk.f1_score(y, predicted, average="macro", zero_division=0)) <= 1e-9
    _, _, _, support = sk.precision_recall_fscore_support(y, predicted, labels=classes, zero_division=0)
    assert [report["per_class"][str(label)]["support"] for label in classes] == support.tolist()
    assert len(report["calibration"]["bins"]) == 10
    assert sum(b["count"] for b in report["calibration"]["bins"]) == 60
    listed = client.get(f"/v1/models/{model_id}/evaluations", headers=ALICE).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == report["id"]


def test_evaluate_lists_labels_the_model_never_saw(trained: tuple[TestClient, str]) -> None:
    client, _ = trained
    data = b"x1,x2,x3,label\n0,0,0,0\n4,4,0,1\n0,4,4,7\n0,4,4,7\n"
    dataset = upload_csv(client, data, headers=ALICE).json()
    report = client.post("/v1/models/blobs/evaluate", json={"dataset_id": dataset["id"]}, headers=ALICE).json()
    assert report["unknown_labels"] == [7]
    assert report["accuracy"] <= 0.5
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 2


def test_evaluate_errors(trained: tuple[TestClient, str]) -> None:
    client, model_id = trained
    narrow = upload_csv(client, b"a,b,label\n0,1,0\n1,0,1\n", headers=ALICE).json()
    mismatch = client.post("/v1/models/blobs/evaluate", json={"dataset_id": narrow["id"]}, headers=ALICE)
    assert mismatch.status_code == 422
    assert mismatch.json()["error"]["code"] == "wrong_feature_count"
    assert "2 features" in mismatch.json()["error"]["message"]
    missing = client.post("/v1/models/blobs/evaluate", json={"dataset_id": "nope"}, headers=ALICE)
    assert missing.status_code == 404 and missing.json()["error"]["details"][0]["field"] == "dataset_id"
    assert client.post("/v1/models/blobs/evaluate", json={}, headers=ALICE).status_code == 422
    theirs = upload_csv(client, blobs_csv(n_per_class=3), headers=BOB).json()
    foreign = client.post("/v1/models/blobs/evaluate", json={"dataset_id": theirs["id"]}, headers=ALICE)
    assert foreign.status_code == 404
    assert (
        client.post(f"/v1/models/{model_id}/evaluate", json={"dataset_id": theirs["id"]}, headers=BOB).status_code
        == 404
    )
    assert client.get(f"/v1/models/{model_id}/evaluations", headers=BOB).status_code == 404
