"""API keys: 401 without or with an unknown key, 403 on admin actions, ownership as 404, no keys in logs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.service.conftest import blobs_csv, upload_csv
from worker import Store

KEYS = "alice-key-1234:user,bob-key-5678:user,root-key-9999:admin"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
ROOT = {"Authorization": "Bearer root-key-9999"}
JOB = {"hidden_layers": [4], "epochs": 2, "seed": 0}


@pytest.fixture()
def secured(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=KEYS, metrics_public=False)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YTpi"}])
def test_missing_or_unknown_key_is_401(secured: TestClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/v1/datasets"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/models/x"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ]:
        response = secured.request(method, path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"


def test_probes_need_no_key(secured: TestClient) -> None:
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code in (200, 503)


def test_api_description_needs_a_key_when_keys_are_configured(secured: TestClient) -> None:
    spec = secured.get("/openapi.json", headers=ALICE)
    assert spec.status_code == 200
    assert "/v1/models/{model_id}/predict" in spec.json()["paths"]
    assert "/openapi.json" not in spec.json()["paths"]
    docs = secured.get("/docs", headers=ALICE)
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert secured.get("/redoc", headers=ALICE).status_code == 404


def test_metrics_is_admin_only_when_not_public(
    secured: TestClient, make_client: Callable[..., TestClient]
) -> None:
    assert secured.get("/metrics", headers=ALICE).status_code == 403
    assert secured.get("/metrics", headers=ALICE).json()["error"]["code"] == "forbidden"
    assert secured.get("/metrics", headers=ROOT).status_code == 200
    public = make_client(api_keys=KEYS, metrics_public=True)
    assert public.get("/metrics").status_code == 200


def test_resources_belong_to_their_key(secured: TestClient, run_worker: Callable[[], None]) -> None:
    dataset = upload_csv(secured, blobs_csv(n_per_class=4), headers=ALICE, name="mine").json()
    job = secured.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB}, headers=ALICE).json()
    run_worker()
    model_id = secured.get(f"/v1/jobs/{job['id']}", headers=ALICE).json()["model_id"]
    assert model_id

    # Bob sees none of it: reading, listing, training on, predicting with, canceling, deleting -> 404 / empty
    assert secured.get(f"/v1/datasets/{dataset['id']}", headers=BOB).status_code == 404
    assert secured.get("/v1/datasets", headers=BOB).json()["total"] == 0
    assert secured.post("/v1/jobs", json={"dataset_id": dataset["id"]}, headers=BOB).status_code == 404
    assert secured.get(f"/v1/jobs/{job['id']}", headers=BOB).status_code == 404
    assert secured.post(f"/v1/jobs/{job['id']}/cancel", headers=BOB).status_code == 404
    assert secured.get("/v1/jobs", headers=BOB).json()["total"] == 0
    assert secured.get(f"/v1/models/{model_id}", headers=BOB).status_code == 404
    assert secured.get("/v1/models/mine", headers=BOB).status_code == 404
    assert secured.get("/v1/models", headers=BOB).json()["total"] == 0
    row = {"instances": [[0.0, 0.0, 0.0]]}
    assert secured.post(f"/v1/models/{model_id}/predict", json=row, headers=BOB).status_code == 404
    assert secured.delete(f"/v1/models/{model_id}", headers=BOB).status_code == 404
    assert secured.delete(f"/v1/datasets/{dataset['id']}", headers=BOB).status_code == 404

    # Alice and the admin do
    assert secured.post(f"/v1/models/{model_id}/predict", json=row, headers=ALICE).status_code == 200
    assert secured.post("/v1/models/mine/predict", json=row, headers=ALICE).status_code == 200
    # ... and Bob still does not, now that the model's record is cached (the prediction fast path)
    assert secured.post(f"/v1/models/{model_id}/predict", json=row, headers=BOB).status_code == 404
    assert secured.get("/v1/datasets", headers=ROOT).json()["total"] == 1
    assert secured.get(f"/v1/models/{model_id}", headers=ROOT).status_code == 200
    assert secured.delete(f"/v1/models/{model_id}", headers=ROOT).status_code == 204
    assert secured.get(f"/v1/models/{model_id}", headers=ALICE).status_code == 404


def test_model_names_and_versions_are_per_key(secured: TestClient, run_worker: Callable[[], None]) -> None:
    trained: dict[str, str] = {}
    for who, headers in (("alice", ALICE), ("bob", BOB)):
        dataset_id = upload_csv(secured, blobs_csv(n_per_class=4), headers=headers).json()["id"]
        body = {"dataset_id": dataset_id, "name": "clf", **JOB}
        assert secured.post("/v1/jobs", json=body, headers=headers).status_code == 202
        run_worker()
        model = secured.get("/v1/models/clf", headers=headers).json()
        assert model["version"] == 1, who  # Bob's "clf" neither bumps nor reveals Alice's version count
        trained[who] = model["id"]
    assert trained["alice"] != trained["bob"]
    for who, headers in (("alice", ALICE), ("bob", BOB)):
        mine = secured.get("/v1/models", params={"name": "clf"}, headers=headers).json()
        assert mine["total"] == 1 and [m["id"] for m in mine["items"]] == [trained[who]]
        row = {"instances": [[0.0, 0.0, 0.0]]}
        assert secured.post("/v1/models/clf/predict", json=row, headers=headers).json()["model_id"] == trained[who]

    # the admin sees both lineages; a bare name would have to pick an owner, so it asks for the id
    assert secured.get("/v1/models", params={"name": "clf"}, headers=ROOT).json()["total"] == 2
    ambiguous = secured.get("/v1/models/clf", headers=ROOT)
    assert ambiguous.status_code == 409 and ambiguous.json()["error"]["code"] == "ambiguous_model_name"
    assert "model id" in ambiguous.json()["error"]["message"]
    assert secured.get(f"/v1/models/{trained['bob']}", headers=ROOT).status_code == 200
    assert secured.delete("/v1/models/clf", headers=BOB).status_code == 204  # Bob's latest: his only one
    assert secured.get("/v1/models/clf", headers=ROOT).json()["id"] == trained["alice"]
    assert secured.get("/v1/models/clf", headers=BOB).status_code == 404


def test_owner_is_a_hash_of_the_key(secured: TestClient, redis_url: str, data_dir: Path) -> None:
    dataset_id = upload_csv(secured, blobs_csv(n_per_class=4), headers=ALICE).json()["id"]
    client = redis.Redis.from_url(redis_url)
    record = Store(client, data_dir / "blobs").get_dataset(dataset_id)
    assert record is not None and record.owner == hashlib.sha256(b"alice-key-1234").hexdigest()
    keys = list(client.scan_iter("*"))
    dump = b"".join(keys) + b"".join(client.dump(key) or b"" for key in keys)  # type: ignore[misc]
    client.close()
    assert b"alice-key-1234" not in dump


def test_keys_never_logged(make_client: Callable[..., TestClient], capfd: pytest.CaptureFixture[str]) -> None:
    client = make_client(api_keys=KEYS, log_format="json")
    client.get("/v1/datasets", headers=ALICE)
    client.get("/v1/datasets", headers={"Authorization": "Bearer wrong-secret-key"})
    client.get("/v1/datasets?token=alice-key-1234", headers=ALICE)
    err = capfd.readouterr().err
    assert '"path": "/v1/datasets"' in err
    assert "alice-key-1234" not in err and "wrong-secret-key" not in err


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    paths = spec["paths"]
    return {f"{method.upper()} {path}": op for path, ops in paths.items() for method, op in ops.items()}


def test_openapi_declares_no_security_without_keys(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    for name, operation in _operations(spec).items():
        assert "security" not in operation, name
        assert "401" not in operation["responses"] and "403" not in operation["responses"], name


@pytest.mark.parametrize("metrics_public", [True, False])
def test_openapi_declares_bearer_security_with_keys(
    make_client: Callable[..., TestClient], metrics_public: bool
) -> None:
    spec = make_client(api_keys=KEYS, metrics_public=metrics_public).get("/openapi.json", headers=ALICE).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for name, operation in _operations(spec).items():
        path = name.split()[1]
        keyed_v2 = path.startswith("/v2") and not path.startswith("/v2/health")
        secured = path.startswith("/v1/") or keyed_v2 or (name == "GET /metrics" and not metrics_public)
        assert operation.get("security") == ([{"HTTPBearer": []}] if secured else None), name


def test_upload_form_schema_is_exact_and_enforced(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["additionalProperties"] is False
    assert set(form["properties"]) == {"file", "label_column", "name"} and form["required"] == ["file"]

    extra = upload_csv(client, blobs_csv(n_per_class=4), name="ok", bogus="1")
    assert extra.status_code == 422, extra.text
    assert extra.json()["error"]["details"][0]["field"] == "bogus"
    assert "file, label_column, name" in extra.json()["error"]["message"]
    csv = b"a,b,y\n0,0,p\n1,1,q\n0,1,p\n1,0,q\n"
    exact = upload_csv(client, csv, name="ok", label_column="y")
    assert exact.status_code == 201, exact.text
