"""Upload, train with a real RQ worker (burst mode), follow the job, predict, manage models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.service.conftest import blobs_csv, upload_csv

JOB = {"hidden_layers": [8], "epochs": 5, "batch_size": 16, "learning_rate": 0.05, "seed": 1}


def _train(client: TestClient, run_worker: Callable[[], None], **extra: Any) -> dict[str, Any]:
    dataset = upload_csv(client, blobs_csv(), name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB, **extra})
    assert response.status_code == 202, response.text
    run_worker()
    job: dict[str, Any] = client.get(response.headers["Location"]).json()
    return job


def test_job_trains_and_model_predicts(client: TestClient, run_worker: Callable[[], None]) -> None:
    dataset = upload_csv(client, blobs_csv(), name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB})
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued"
    assert queued["queue_position"] == 0
    assert queued["name"] == "blobs"
    assert response.headers["Location"] == f"/v1/jobs/{queued['id']}"

    run_worker()

    job = client.get(f"/v1/jobs/{queued['id']}").json()
    assert job["status"] == "succeeded", job
    assert job["queue_position"] is None
    assert [entry["epoch"] for entry in job["history"]] == [1, 2, 3, 4, 5]
    assert job["progress"]["epoch"] == 5 and job["progress"]["epochs"] == 5
    assert job["progress"]["eta_seconds"] == 0
    assert job["progress"]["samples_per_second"] > 0
    assert job["started_at"] is not None and job["finished_at"] is not None
    assert job["error"] is None

    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["name"] == "blobs" and model["version"] == 1
    assert model["classes"] == [0, 1, 2]
    assert model["layer_sizes"] == [3, 8, 3]
    assert model["job_id"] == job["id"] and model["dataset_id"] == dataset["id"]
    assert len(model["history"]) == 5
    assert not {"sha256", "owner", "blob", "size_bytes"} & set(model)

    rows = [[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 4.0, 4.0]]
    prediction = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": rows})
    assert prediction.status_code == 200, prediction.text
    body = prediction.json()
    assert body["model_id"] == job["model_id"] and body["version"] == 1
    assert body["classes"] == [0, 1, 2]
    assert body["predictions"] == [0, 1, 2]
    assert all(abs(sum(p) - 1.0) < 1e-5 and len(p) == 3 for p in body["probabilities"])

    by_name = client.post("/v1/models/blobs/predict", json={"instances": rows[:1]})
    assert by_name.json()["model_id"] == job["model_id"]

    many = rows * 100  # a larger request gives the same results row for row
    large = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": many}).json()
    assert large["predictions"] == [0, 1, 2] * 100
    assert large["probabilities"][:3] == body["probabilities"]


def test_model_versions_by_name_and_delete(client: TestClient, run_worker: Callable[[], None]) -> None:
    first = _train(client, run_worker, name="clf")
    second = _train(client, run_worker, name="clf", seed=2)
    assert first["status"] == second["status"] == "succeeded"
    versions = client.get("/v1/models", params={"name": "clf"}).json()
    assert [m["version"] for m in versions["items"]] == [2, 1]
    assert versions["total"] == 2
    latest = client.get("/v1/models/clf").json()
    assert latest["id"] == second["model_id"] and latest["version"] == 2

    row = {"instances": [[0.0, 0.0, 0.0]]}
    assert client.post("/v1/models/clf/predict", json=row).json()["version"] == 2
    assert client.delete(f"/v1/models/{second['model_id']}").status_code == 204
    assert client.get(f"/v1/models/{second['model_id']}").status_code == 404
    assert client.post(f"/v1/models/{second['model_id']}/predict", json=row).status_code == 404
    assert client.post("/v1/models/clf/predict", json=row).json()["version"] == 1


def test_predict_rejects_bad_instances(client: TestClient, run_worker: Callable[[], None]) -> None:
    model_id = _train(client, run_worker)["model_id"]
    url = f"/v1/models/{model_id}/predict"
    wrong_width = client.post(url, json={"instances": [[1.0, 2.0, 3.0], [1.0, 2.0]]})
    assert wrong_width.status_code == 422
    assert wrong_width.json()["error"]["details"][0]["field"] == "instances[1]"
    assert "expects 3" in wrong_width.json()["error"]["message"]
    for bad, field in [
        ({"instances": [[1.0, True, 3.0]]}, "instances[0][1]"),
        ({"instances": [[1.0, "2", 3.0]]}, "instances[0][1]"),
        ({"instances": []}, "instances"),
        ({"instances": [[1.0, 2.0, 3.0]], "extra": 1}, "extra"),
    ]:
        response = client.post(url, json=bad)
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"][0]["field"] == field
    nan = client.post(
        url, content=b'{"instances": [[1.0, NaN, 3.0]]}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422 and nan.json()["error"]["details"][0]["field"] == "instances[0][1]"
    huge = client.post(url, json={"instances": [[1e308, -1e308, 1e308]]})
    assert huge.status_code in (200, 422)


def test_predict_row_limit(make_client: Callable[..., TestClient], run_worker: Callable[[], None]) -> None:
    client = make_client(max_predict_rows=2)
    model_id = _train(client, run_worker)["model_id"]
    response = client.post(f"/v1/models/{model_id}/predict", json={"instances": [[0.0, 0.0, 0.0]] * 3})
    assert response.status_code == 422
    assert "max_predict_rows=2" in response.json()["error"]["message"]


def test_jobs_list_newest_first_with_status_filter_and_paging(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    done = _train(client, run_worker)
    dataset_id = done["dataset_id"]
    later = [client.post("/v1/jobs", json={"dataset_id": dataset_id, **JOB}).json()["id"] for _ in range(2)]
    listing = client.get("/v1/jobs").json()
    assert [job["id"] for job in listing["items"]] == [*reversed(later), done["id"]]
    assert listing["total"] == 3
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()
    assert [job["id"] for job in queued["items"]] == list(reversed(later))
    assert [job["queue_position"] for job in queued["items"]] == [1, 0]
    page = client.get("/v1/jobs", params={"offset": 1, "limit": 1}).json()
    assert [job["id"] for job in page["items"]] == [later[0]]
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422


def test_cancel_queued_job_never_runs(client: TestClient, run_worker: Callable[[], None]) -> None:
    dataset = upload_csv(client, blobs_csv()).json()
    job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB}).json()
    canceled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    run_worker()
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "canceled" and after["history"] == [] and after["model_id"] is None
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert client.post("/v1/jobs/nope/cancel").status_code == 404


def test_delete_in_one_api_process_is_seen_by_another(
    make_client: Callable[..., TestClient], run_worker: Callable[[], None]
) -> None:
    first, second = make_client(), make_client()
    records = first.app.state.backprop.records  # type: ignore[attr-defined]
    now = [0.0]
    records.clock = lambda: now[0]  # a manual clock: the staleness bound without sleeping
    model_id = _train(first, run_worker)["model_id"]
    row = {"instances": [[0.0, 0.0, 0.0]]}
    for client in (first, second):  # both load and cache the model
        assert client.post(f"/v1/models/{model_id}/predict", json=row).status_code == 200
    assert second.delete(f"/v1/models/{model_id}").status_code == 204
    assert second.post(f"/v1/models/{model_id}/predict", json=row).status_code == 404  # the deleting process
    # Predictions in `first` may serve its cached record for at most recheck_seconds, then re-check Redis.
    now[0] += records.recheck_seconds
    assert first.post(f"/v1/models/{model_id}/predict", json=row).status_code == 404
    assert first.get(f"/v1/models/{model_id}").status_code == 404
