"""End to end through `backprop serve`: two versions, a guarded promotion, predictions by alias, an evaluation
job, a verification that retrains bit for bit, and a continued training."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_wine

from backprop.local_stack import LocalStack, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path / "var", env={"BACKPROP_MAX_PREDICT_ROWS": "100"}) as running:
        yield running


def _csv(X: np.ndarray, y: np.ndarray) -> bytes:
    out = io.StringIO()
    out.write(",".join(f"f{i}" for i in range(X.shape[1])) + ",label\n")
    for row, label in zip(X, y, strict=True):
        out.write(",".join(f"{v:.6g}" for v in row) + f",{label}\n")
    return out.getvalue().encode()


def _finished(client: httpx.Client, location: str) -> dict[str, Any]:
    job: dict[str, Any] = {}

    def done() -> bool:
        nonlocal job
        job = client.get(location).json()
        return job["status"] in ("succeeded", "failed", "canceled")

    wait_until(done, 120, f"job {location} finished", interval=0.2)
    assert job["status"] == "succeeded", job
    return job


def _train(client: httpx.Client, dataset_id: str, **options: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "name": "wine", **options})
    assert response.status_code == 202, response.text
    return _finished(client, response.headers["location"])


def test_e2e_promote_evaluate_verify_continue(stack: LocalStack) -> None:
    X, y = load_wine(return_X_y=True)
    with httpx.Client(base_url=stack.url, timeout=30.0) as client:
        dataset = client.post("/v1/datasets", files={"file": ("wine.csv", _csv(X, y), "text/csv")}).json()
        weak = _train(client, dataset["id"], hidden_layers=[2], epochs=1, learning_rate=1e-5, seed=1)
        strong = _train(client, dataset["id"], hidden_layers=[16], epochs=40, learning_rate=0.01, seed=1)

        assert client.put("/v1/models/wine/aliases/champion", json={"version": 1}).status_code == 200
        assert (
            client.post("/v1/models/wine@champion/predict", json={"instances": X[:2].tolist()}).json()["version"] == 1
        )
        guard = {"dataset_id": dataset["id"], "metric": "accuracy", "min_delta": 0.0}
        # 178 rows > BACKPROP_MAX_PREDICT_ROWS: the guard needs stored evaluations, made by evaluation jobs
        refused = client.put("/v1/models/wine/aliases/champion", json={"version": 2, "require": guard})
        assert refused.status_code == 422 and "max_predict_rows" in refused.text
        for job in (weak, strong):
            queued = client.post(f"/v1/models/{job['model_id']}/evaluate", json={"dataset_id": dataset["id"]})
            assert queued.status_code == 202, queued.text
            _finished(client, queued.headers["location"])
        promoted = client.put("/v1/models/wine/aliases/champion", json={"version": 2, "require": guard})
        assert promoted.status_code == 200, promoted.text
        comparison = promoted.json()["comparison"]
        assert comparison["candidate"]["value"] >= comparison["current"]["value"]
        served = client.post(
            "/v2/models/wine@champion/infer",
            json={"inputs": [{"name": "input", "shape": [1, 13], "datatype": "FP64", "data": X[0].tolist()}]},
        )
        assert served.json()["model_version"] == "2"

        verify = client.post("/v1/models/wine@champion/verify")
        assert verify.status_code == 202, verify.text
        _finished(client, verify.headers["location"])
        (result,) = client.get(f"/v1/models/{strong['model_id']}/verifications").json()["items"]
        assert result["match"] is True, result

        child = _train(client, dataset["id"], hidden_layers=[16], epochs=2, init_model="wine@champion")
        model = client.get(f"/v1/models/{child['model_id']}").json()
        assert (model["version"], model["parent_model_id"]) == (3, strong["model_id"])
        assert model["validation_report"]["n_samples"] > 0
