"""Path ids: anything that is not an id this server makes (nor, for models, a name) is a 404 that never
reaches Redis, however the text continues (`{id}:history` is another Redis key of the same job)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient

from tests.service.conftest import blobs_csv, upload_csv
from worker import is_id, keys


@pytest.mark.parametrize("suffix", [":stop", ":fence", ":history", ":checkpoint"])
def test_read_job_other_key_of_the_job_is_404(
    client: TestClient, redis_conn: redis.Redis, suffix: str
) -> None:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 1}).json()["id"]
    # what a running job leaves next to its record: a stop flag, a fence counter, a history, a checkpoint
    redis_conn.set(keys.job_stop(job_id), "1")
    redis_conn.set(keys.job_fence(job_id), 3)
    redis_conn.rpush(keys.job_history(job_id), '{"epoch": 1}')
    redis_conn.hset(keys.job_checkpoint(job_id), mapping={"path": "checkpoints/x.bin", "sha256": "0", "epoch": 1})

    for path in (f"/v1/jobs/{job_id}{suffix}", f"/v1/jobs/{job_id}{suffix}/cancel"):
        method = client.post if path.endswith("/cancel") else client.get
        response = method(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200


@pytest.mark.parametrize("bad", ["x:y", "ABCDEF0123456789ABCDEF0123456789", "0" * 31, "0" * 33, "*", "..%2F.."])
def test_dataset_and_job_routes_non_id_is_404(client: TestClient, bad: str) -> None:
    for path in (f"/v1/datasets/{bad}", f"/v1/jobs/{bad}"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
    assert client.delete(f"/v1/datasets/{bad}").status_code == 404


def test_dataset_other_key_is_404(client: TestClient, redis_conn: redis.Redis) -> None:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    redis_conn.set(keys.dataset(dataset_id + ":extra"), '{"id": "forged"}')
    response = client.get(f"/v1/datasets/{dataset_id}:extra")
    assert response.status_code == 404, response.text


def test_model_refs_ids_and_names_work_other_text_is_404(
    client: TestClient, redis_conn: redis.Redis, run_worker: Callable[[], None]
) -> None:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "name": "iris.v2-b_1", "epochs": 1}).json()
    run_worker()
    model_id = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
    assert is_id(model_id)
    redis_conn.hset(keys.model(model_id + ":x"), mapping={"meta": "{}", "version": "1"})
    assert client.get(f"/v1/models/{model_id}").status_code == 200
    assert client.get("/v1/models/iris.v2-b_1").json()["id"] == model_id
    instances = {"instances": [[0.0, 0.0, 0.0]]}
    assert client.post("/v1/models/iris.v2-b_1/predict", json=instances).status_code == 200
    for bad in (f"{model_id}:x", "iris.v2-b_1:versions", "-lead", "a" * 65):
        assert client.get(f"/v1/models/{bad}").status_code == 404, bad
        assert client.post(f"/v1/models/{bad}/predict", json=instances).status_code == 404, bad
        assert client.delete(f"/v1/models/{bad}").status_code == 404, bad
    assert client.get(f"/v1/models/{model_id}").status_code == 200


def test_is_id_accepts_only_new_ids() -> None:
    from worker.store import new_id

    assert is_id(new_id())
    assert not is_id(new_id() + "\n")
    assert not is_id(new_id().upper())
    assert not is_id("")


def test_create_job_dataset_id_that_is_not_an_id_is_404(client: TestClient, redis_conn: redis.Redis) -> None:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    redis_conn.set(keys.dataset(dataset_id + ":copy"), redis_conn.get(keys.dataset(dataset_id)) or b"")
    response = client.post("/v1/jobs", json={"dataset_id": f"{dataset_id}:copy", "epochs": 1})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["details"][0]["field"] == "dataset_id"
