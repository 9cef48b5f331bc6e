"""Where a prediction runs: on the event loop only when rows x parameters is small; else in the thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

import engine
from service.routes import models
from service.settings import Settings
from tests.service.conftest import ClientFactory, blobs_csv, upload_csv


def test_runs_inline_decides_by_rows_times_parameters() -> None:
    default = Settings().predict_inline_compute
    assert models.runs_inline(1, 16_800_000, default) is False  # one row of a huge model: thread pool
    assert models.runs_inline(256, 16_800_000, default) is False
    assert models.runs_inline(5_000, 59, default) is True  # many rows of a tiny model: inline
    assert models.runs_inline(10, 100, 1_000) is True
    assert models.runs_inline(11, 100, 1_000) is False


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize(("inline_compute", "expect_inline"), [(None, True), (100, False)])
def test_predict_runs_where_compute_says(
    make_client: ClientFactory,
    run_worker: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
    inline_compute: int | None,
    expect_inline: bool,
) -> None:
    overrides = {} if inline_compute is None else {"predict_inline_compute": inline_compute}
    client: TestClient = make_client(**overrides)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "hidden_layers": [8], "epochs": 1}).json()
    run_worker()
    model_id = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
    assert client.get(f"/v1/models/{model_id}").json()["n_parameters"] == 59  # (3+1)*8 + (8+1)*3

    seen: list[bool] = []
    original = models._probabilities

    def recording(model: engine.Model, X: np.ndarray) -> np.ndarray:
        seen.append(_on_event_loop())
        return original(model, X)

    monkeypatch.setattr(models, "_probabilities", recording)
    response = client.post(f"/v1/models/{model_id}/predict", json={"instances": [[0.0, 0.0, 0.0]] * 2})
    assert response.status_code == 200, response.text
    assert seen == [expect_inline]
