"""POST /v1/jobs with `init_model`: training continues from a model's weights as the next version of its name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import engine
from tests.service.conftest import blobs_csv, upload_csv

KEYS = "alice-key-1234:user,bob-key-5678:user"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
JOB = {"hidden_layers": [6], "activation": "tanh", "epochs": 5, "batch_size": 8, "learning_rate": 0.03, "seed": 2}


def _weights(client: TestClient, ref: str) -> list[np.ndarray]:
    model = engine.loads(client.get(f"/v1/models/{ref}/export", headers=ALICE).content)
    return [W for W, _ in model.params]


@pytest.fixture()
def parent(make_client: Callable[..., TestClient], run_worker: Callable[[], None]) -> tuple[TestClient, dict[str, Any]]:
    client = make_client(api_keys=KEYS)
    dataset = upload_csv(client, blobs_csv(n_per_class=20, seed=1), headers=ALICE, name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB}, headers=ALICE)
    assert response.status_code == 202, response.text
    run_worker()
    job = client.get(response.headers["Location"], headers=ALICE).json()
    assert job["status"] == "succeeded", job
    return client, client.get(f"/v1/models/{job['model_id']}", headers=ALICE).json()


def test_init_model_continues_as_the_next_version(
    parent: tuple[TestClient, dict[str, Any]], run_worker: Callable[[], None]
) -> None:
    client, model = parent
    fresh = upload_csv(client, blobs_csv(n_per_class=20, seed=7), headers=ALICE, name="this-month").json()
    body = {**JOB, "dataset_id": fresh["id"], "init_model": "blobs", "epochs": 1, "learning_rate": 1e-9}
    response = client.post("/v1/jobs", json=body, headers=ALICE)
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "blobs"
    run_worker()
    job = client.get(response.headers["Location"], headers=ALICE).json()
    assert job["status"] == "succeeded", job
    child = client.get(f"/v1/models/{job['model_id']}", headers=ALICE).json()
    assert child["name"] == "blobs" and child["version"] == 2
    assert child["parent_model_id"] == model["id"]
    assert child["receipt"]["parent"]["model_id"] == model["id"]
    for W, W_parent in zip(_weights(client, child["id"]), _weights(client, model["id"]), strict=True):
        np.testing.assert_allclose(W, W_parent, atol=1e-5)  # a 1e-9 learning rate barely moves them

    verify = client.post(f"/v1/models/{child['id']}/verify", headers=ALICE)
    assert verify.status_code == 202
    run_worker()
    result = client.get(f"/v1/models/{child['id']}/verifications", headers=ALICE).json()["items"][0]
    assert result["match"] is True, result


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"hidden_layers": [7]}, "hidden_layers: the job has [7], the model [6]"),
        ({"activation": "relu"}, "activation"),
        ({"output": "softmax"}, None),  # 3 classes: auto is softmax already, so this one fits
    ],
)
def test_init_model_other_architecture_is_422_naming_it(
    parent: tuple[TestClient, dict[str, Any]], change: dict[str, Any], named: str | None
) -> None:
    client, model = parent
    body = {**JOB, "dataset_id": model["dataset_id"], "init_model": model["id"], **change}
    response = client.post("/v1/jobs", json=body, headers=ALICE)
    if named is None:
        assert response.status_code == 202, response.text
        return
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "architecture_mismatch" and named in error["message"]
    assert error["details"][0]["field"] == "init_model"


def test_init_model_other_classes_or_features_is_422(parent: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = parent
    two = upload_csv(client, b"x1,x2,x3,label\n0,0,0,0\n1,1,1,1\n0,1,0,0\n1,0,1,1\n", headers=ALICE).json()
    response = client.post("/v1/jobs", json={**JOB, "dataset_id": two["id"], "init_model": "blobs"}, headers=ALICE)
    assert response.status_code == 422
    assert "classes" in response.json()["error"]["message"]
    narrow = upload_csv(client, b"a,b,label\n0,0,0\n1,1,1\n0,1,2\n", headers=ALICE).json()
    response = client.post("/v1/jobs", json={**JOB, "dataset_id": narrow["id"], "init_model": "blobs"}, headers=ALICE)
    assert response.status_code == 422
    assert "features: the dataset has 2, the model 3" in response.json()["error"]["message"]


def test_init_model_unknown_or_foreign_is_404(parent: tuple[TestClient, dict[str, Any]]) -> None:
    client, model = parent
    response = client.post(
        "/v1/jobs", json={**JOB, "dataset_id": model["dataset_id"], "init_model": "nothing"}, headers=ALICE
    )
    assert response.status_code == 404
    assert response.json()["error"]["details"][0]["field"] == "init_model"
    theirs = upload_csv(client, blobs_csv(n_per_class=5), headers=BOB).json()
    foreign = client.post("/v1/jobs", json={**JOB, "dataset_id": theirs["id"], "init_model": model["id"]}, headers=BOB)
    assert foreign.status_code == 404
