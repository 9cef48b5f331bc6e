"""POST /v1/jobs validation, compute caps and queue limits (no training needed)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine import TrainConfig
from tests.service.conftest import blobs_csv, upload_csv


@pytest.fixture()
def dataset_id(client: TestClient) -> str:
    return str(upload_csv(client, blobs_csv(n_per_class=4)).json()["id"])


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"epochs": True}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"epochs": "3"}, "epochs"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": False}, "learning_rate"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"validation_fraction": 0.9}, "validation_fraction"),
        ({"hidden_layers": [8, 0]}, "hidden_layers[1]"),
        ({"hidden_layers": [8, True]}, "hidden_layers[1]"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"early_stopping": 1}, "early_stopping"),
        ({"seed": -1}, "seed"),
        ({"dtype": "float16"}, "dtype"),
        ({"name": "has space"}, "name"),
    ],
)
def test_create_job_rejects_invalid_field(
    client: TestClient, dataset_id: str, extra: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, **extra})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field
    assert field in error["message"]


def test_create_job_sigmoid_output_needs_two_classes(client: TestClient, dataset_id: str) -> None:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "output": "sigmoid"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "output"
    assert "3" in response.json()["error"]["message"]


def test_create_job_missing_dataset_id_and_unknown_dataset(client: TestClient) -> None:
    missing = client.post("/v1/jobs", json={"epochs": 3})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["field"] == "dataset_id"
    unknown = client.post("/v1/jobs", json={"dataset_id": "0" * 32})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["details"][0]["field"] == "dataset_id"


@pytest.mark.parametrize(
    ("overrides", "extra", "limit", "field"),
    [
        ({"max_hidden_layers": 2}, {"hidden_layers": [4, 4, 4]}, "max_hidden_layers=2", "hidden_layers"),
        ({"max_layer_width": 16}, {"hidden_layers": [8, 32]}, "max_layer_width=16", "hidden_layers[1]"),
        ({"max_epochs": 10}, {"epochs": 11}, "max_epochs=10", "epochs"),
        ({"max_batch_size": 8}, {"batch_size": 9}, "max_batch_size=8", "batch_size"),
        # 3 features, 3 classes: (3+1)*10 + (10+1)*3 = 73 parameters
        ({"max_parameters": 72}, {"hidden_layers": [10]}, "max_parameters=72", "hidden_layers"),
    ],
)
def test_create_job_compute_caps_name_limit_and_value(
    make_client: Callable[..., TestClient],
    overrides: dict[str, int],
    extra: dict[str, Any],
    limit: str,
    field: str,
) -> None:
    client = make_client(**overrides)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, **extra})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded"
    assert limit in error["message"]
    assert error["details"][0]["field"] == field


def test_create_job_parameter_cap_is_inclusive(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_parameters=73)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id, "hidden_layers": [10]}).status_code == 202


def test_create_job_defaults_and_config(client: TestClient, dataset_id: str) -> None:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert response.status_code == 202
    job = response.json()
    assert job["name"] == "data"  # from the dataset (its file name)
    assert job["config"]["hidden_layers"] == [100]
    assert job["config"]["optimizer"] == "adam"
    assert job["progress"] is None and job["history"] == []
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    assert client.get("/v1/jobs/" + "f" * 32).status_code == 404


def test_queued_jobs_per_key_is_429(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_queued_jobs_per_key=2)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    for _ in range(2):
        assert client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code == 202
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert response.status_code == 429
    assert "max_queued_jobs_per_key=2" in response.json()["error"]["message"]


def test_queue_depth_is_503(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_queue_depth=1)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code == 202
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert response.status_code == 503
    assert "max_queue_depth=1" in response.json()["error"]["message"]
    assert response.headers["Retry-After"]


def _job_create_schema(client: TestClient) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    ref = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def _number_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional number, the items of a list, or the property itself."""
    if "anyOf" in prop:
        prop = next(branch for branch in prop["anyOf"] if branch.get("type") != "null")
    return prop.get("items", prop)  # type: ignore[no-any-return]


def test_create_job_openapi_lists_every_train_config_field_with_its_default_and_choices(client: TestClient) -> None:
    schema = _job_create_schema(client)
    properties = schema["properties"]
    options = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(properties) == {"dataset_id", "name", "init_model", *options}
    assert schema["additionalProperties"] is False
    for name, option in options.items():
        prop = properties[name]
        default = list(option.default) if isinstance(option.default, tuple) else option.default
        assert prop.get("default") == default, name  # FastAPI's document leaves out a null default
        choices = option.metadata.get("choices")
        if choices is not None:
            assert sorted(prop["enum"]) == sorted(choices), name
        number = _number_schema(prop)
        if number.get("type") in ("integer", "number"):
            assert "minimum" in number or "exclusiveMinimum" in number, name
            assert "maximum" in number or "exclusiveMaximum" in number, name


def test_create_job_openapi_bounds_follow_the_engine_or_a_tighter_service_cap(client: TestClient) -> None:
    properties = _job_create_schema(client)["properties"]
    for option in dataclasses.fields(TrainConfig):
        number = _number_schema(properties[option.name])
        for engine_key, schema_key in (("ge", "minimum"), ("gt", "exclusiveMinimum")):
            if engine_key in option.metadata:
                assert number[schema_key] == option.metadata[engine_key], option.name
        upper = option.metadata.get("le", option.metadata.get("lt"))
        shown = number.get("maximum", number.get("exclusiveMaximum"))
        if upper is not None:
            assert shown is not None and shown <= upper, option.name
    assert properties["validation_fraction"]["maximum"] == 0.5
    assert properties["momentum"]["exclusiveMaximum"] == 1.0


def test_create_job_accepts_train_config_defaults_spelled_out(client: TestClient, dataset_id: str) -> None:
    body = {"dataset_id": dataset_id, **TrainConfig(epochs=1).to_dict()}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["config"] == TrainConfig(epochs=1).to_dict()
def test_delete_job_finished_only_and_model_stays(client: TestClient, run_worker: Callable[[], None]) -> None:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 2}).json()
    response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 409 and "queued" in response.json()["error"]["message"]
    run_worker()
    finished = client.get(f"/v1/jobs/{job['id']}").json()
    assert finished["status"] == "succeeded"
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.get(f"/v1/models/{finished['model_id']}").status_code == 200
    assert client.get("/v1/jobs", params={"status": "succeeded"}).json()["total"] == 0


def test_queued_jobs_per_key_holds_under_concurrent_posts(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_queued_jobs_per_key=1)
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    barrier = threading.Barrier(20)

    def post(_: int) -> int:
        barrier.wait()
        return int(client.post("/v1/jobs", json={"dataset_id": dataset_id}).status_code)

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(post, range(20)))
    assert sorted(codes) == [202] + [429] * 19
    assert client.get("/v1/jobs").json()["total"] == 1
