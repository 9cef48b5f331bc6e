"""Per-key storage quotas over HTTP: 429 naming the quota, nothing stored, no training lost."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.service.conftest import blobs_csv, upload_csv

ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
KEYS = "alice-key-1234:user,bob-key-5678:user"


def _dataset_bytes(client: TestClient) -> int:
    """The stored size of the dataset the tests upload (measured with an upload that is deleted again)."""
    store = client.app.state.backprop.store  # type: ignore[attr-defined]
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    size = int(store.usage(None).bytes)
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert store.usage(None).bytes == 0
    return size


def test_upload_over_dataset_quota_is_429_and_keeps_the_others(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=KEYS, max_datasets_per_key=1)
    first = upload_csv(client, blobs_csv(n_per_class=4), headers=ALICE)
    assert first.status_code == 201
    refused = upload_csv(client, blobs_csv(n_per_class=4), headers=ALICE)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "limit_exceeded"
    assert "datasets: 2 exceeds the limit max_datasets_per_key=1" in error["message"]
    assert error["details"][0]["limit"] == "max_datasets_per_key"
    assert client.get("/v1/datasets", headers=ALICE).json()["total"] == 1
    assert client.get(f"/v1/datasets/{first.json()['id']}", headers=ALICE).status_code == 200
    assert upload_csv(client, blobs_csv(n_per_class=4), headers=BOB).status_code == 201  # per key


def test_upload_over_bytes_quota_is_429_until_a_delete(make_client: Callable[..., TestClient]) -> None:
    size = _dataset_bytes(make_client())
    client = make_client(api_keys=KEYS, max_stored_bytes_per_key=size)
    first = upload_csv(client, blobs_csv(n_per_class=4), headers=ALICE)
    assert first.status_code == 201
    refused = upload_csv(client, blobs_csv(n_per_class=4), headers=ALICE)
    assert refused.status_code == 429
    assert f"stored bytes: {2 * size} exceeds the limit max_stored_bytes_per_key={size}" in (
        refused.json()["error"]["message"]
    )
    assert client.delete(f"/v1/datasets/{first.json()['id']}", headers=ALICE).status_code == 204
    assert upload_csv(client, blobs_csv(n_per_class=4), headers=ALICE).status_code == 201


def test_job_over_model_quota_is_429_counting_unfinished_jobs(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    client = make_client(max_models_per_key=1)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 2})
    assert job.status_code == 202
    queued = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 2})
    assert queued.status_code == 429
    assert "models: 2 exceeds the limit max_models_per_key=1" in queued.json()["error"]["message"]
    run_worker()
    model_id = client.get(f"/v1/jobs/{job.json()['id']}").json()["model_id"]
    assert model_id is not None
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code == 429
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code == 202


def test_model_stored_past_bytes_quota_then_new_jobs_refused(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    size = _dataset_bytes(make_client())
    client = make_client(max_stored_bytes_per_key=size + 1)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 2})
    assert job.status_code == 202  # below the quota: the model it makes may take the key past it
    run_worker()
    done = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert done["status"] == "succeeded", done
    assert client.get(f"/v1/models/{done['model_id']}").status_code == 200
    refused = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert refused.status_code == 429
    assert "max_stored_bytes_per_key" in refused.json()["error"]["message"]
    assert upload_csv(client, blobs_csv(n_per_class=4)).status_code == 429
