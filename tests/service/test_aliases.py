"""/v1/models/{name}/aliases: moving aliases, their history, `name@alias` references, guarded promotion."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import blobs_csv, upload_csv

KEYS = "alice-key-1234:user,bob-key-5678:user,root-key-0000:admin"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
ALICE_ID = hashlib.sha256(b"alice-key-1234").hexdigest()
WEAK = {"hidden_layers": [2], "epochs": 1, "batch_size": 64, "learning_rate": 1e-5, "seed": 3}
STRONG = {"hidden_layers": [16], "activation": "tanh", "epochs": 40, "batch_size": 8, "learning_rate": 0.05}


def _train_versions(client: TestClient, run_worker: Callable[[], None]) -> str:
    """Versions 1 (barely trained) and 2 (well trained) of `blobs`; returns the dataset id."""
    dataset = upload_csv(client, blobs_csv(n_per_class=30, seed=2), headers=ALICE, name="blobs").json()
    for spec in (WEAK, STRONG):
        response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "name": "blobs", **spec}, headers=ALICE)
        assert response.status_code == 202, response.text
        run_worker()
    versions = client.get("/v1/models", params={"name": "blobs"}, headers=ALICE).json()["items"]
    assert sorted(model["version"] for model in versions) == [1, 2]
    return str(dataset["id"])


@pytest.fixture()
def alice(make_client: Callable[..., TestClient], run_worker: Callable[[], None]) -> tuple[TestClient, str]:
    client = make_client(api_keys=KEYS)
    return client, _train_versions(client, run_worker)


def _put(client: TestClient, alias: str, body: dict[str, Any], headers: dict[str, str] = ALICE) -> Any:
    return client.put(f"/v1/models/blobs/aliases/{alias}", json=body, headers=headers)


def test_alias_moves_are_listed_with_history(alice: tuple[TestClient, str]) -> None:
    client, _ = alice
    first = _put(client, "champion", {"version": 1})
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1 and first.json()["updated_by"] == ALICE_ID
    assert _put(client, "champion", {"version": 2}).status_code == 200
    assert _put(client, "staging", {"version": 1}).status_code == 200
    listed = client.get("/v1/models/blobs/aliases", headers=ALICE).json()
    assert [(item["alias"], item["version"]) for item in listed["items"]] == [("champion", 2), ("staging", 1)]
    moves = [(m["alias"], m["from"], m["to"], m["by"]) for m in listed["history"]]
    assert moves == [("champion", None, 1, ALICE_ID), ("champion", 1, 2, ALICE_ID), ("staging", None, 1, ALICE_ID)]
    assert [(m["from"], m["to"]) for m in listed["items"][0]["history"]] == [(None, 1), (1, 2)]
    assert "alice-key-1234" not in str(listed)

    assert client.delete("/v1/models/blobs/aliases/champion", headers=ALICE).status_code == 204
    after = client.get("/v1/models/blobs/aliases", headers=ALICE).json()
    assert [item["alias"] for item in after["items"]] == ["staging"]
    assert (after["history"][-1]["from"], after["history"][-1]["to"]) == (2, None)
    assert client.delete("/v1/models/blobs/aliases/champion", headers=ALICE).status_code == 404
    assert client.get("/v1/models/blobs@champion", headers=ALICE).status_code == 404


def test_alias_reference_works_for_read_predict_export_and_v2(alice: tuple[TestClient, str]) -> None:
    client, _ = alice
    assert _put(client, "champion", {"version": 1}).status_code == 200
    assert client.get("/v1/models/blobs@champion", headers=ALICE).json()["version"] == 1
    body = {"instances": [[0.0, 0.0, 0.0]]}
    assert client.post("/v1/models/blobs@champion/predict", json=body, headers=ALICE).json()["version"] == 1
    assert _put(client, "champion", {"version": 2}).status_code == 200
    assert client.post("/v1/models/blobs@champion/predict", json=body, headers=ALICE).json()["version"] == 2
    exported = client.get("/v1/models/blobs@champion/export", headers=ALICE)
    assert exported.headers["content-disposition"] == 'attachment; filename="blobs-v2.npz"'
    infer = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [0.0, 0.0, 0.0]}]}
    response = client.post("/v2/models/blobs@champion/infer", json=infer, headers=ALICE)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "2"
    assert client.get("/v2/models/blobs@champion", headers=ALICE).json()["name"] == "blobs"


def test_alias_belongs_to_the_names_owner(alice: tuple[TestClient, str]) -> None:
    client, _ = alice
    assert _put(client, "champion", {"version": 2}).status_code == 200
    assert client.get("/v1/models/blobs/aliases", headers=BOB).status_code == 404
    assert _put(client, "champion", {"version": 1}, headers=BOB).status_code == 404
    assert client.delete("/v1/models/blobs/aliases/champion", headers=BOB).status_code == 404
    assert client.get("/v1/models/blobs@champion", headers=BOB).status_code == 404
    assert (
        client.post("/v1/models/blobs@champion/predict", json={"instances": [[0, 0, 0]]}, headers=BOB).status_code
        == 404
    )
    assert client.get("/v1/models/blobs@champion", headers=ALICE).json()["version"] == 2


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/models/blobs/aliases/bad!alias", {"version": 1}, "alias"),
        (f"/v1/models/blobs/aliases/{'a' * 65}", {"version": 1}, "alias"),
        ("/v1/models/blobs/aliases/.hidden", {"version": 1}, "alias"),
        ("/v1/models/blobs/aliases/champion", {"version": 0}, "version"),
        ("/v1/models/blobs/aliases/champion", {"version": 1, "extra": 1}, "extra"),
        (
            "/v1/models/blobs/aliases/champion",
            {"version": 1, "require": {"dataset_id": "x", "metric": "auc"}},
            "metric",
        ),
    ],
)
def test_set_alias_rejects_bad_input_with_422(
    alice: tuple[TestClient, str], path: str, body: dict[str, Any], field: str
) -> None:
    client, _ = alice
    response = client.put(path, json=body, headers=ALICE)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_set_alias_unknown_version_or_name_is_404(alice: tuple[TestClient, str]) -> None:
    client, _ = alice
    response = _put(client, "champion", {"version": 9})
    assert response.status_code == 404
    assert "version" in response.json()["error"]["message"]
    assert client.put("/v1/models/nothing/aliases/champion", json={"version": 1}, headers=ALICE).status_code == 404


def test_guarded_promotion_refuses_a_version_that_is_not_better(alice: tuple[TestClient, str]) -> None:
    client, dataset_id = alice
    assert _put(client, "champion", {"version": 2}).status_code == 200
    guard = {"dataset_id": dataset_id, "metric": "accuracy", "min_delta": 0.0}
    refused = _put(client, "champion", {"version": 1, "require": guard})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "promotion_refused"
    detail = error["details"][0]
    assert detail["candidate"]["version"] == 1 and detail["current"]["version"] == 2
    assert detail["candidate"]["value"] < detail["current"]["value"]
    assert client.get("/v1/models/blobs@champion", headers=ALICE).json()["version"] == 2
    for model in client.get("/v1/models", params={"name": "blobs"}, headers=ALICE).json()["items"]:
        stored = client.get(f"/v1/models/{model['id']}/evaluations", headers=ALICE).json()
        assert stored["total"] == 1 and stored["items"][0]["dataset_id"] == dataset_id


def test_guarded_promotion_moves_a_better_version_and_reports_both_figures(alice: tuple[TestClient, str]) -> None:
    client, dataset_id = alice
    assert _put(client, "champion", {"version": 1}).status_code == 200
    guard = {"dataset_id": dataset_id, "metric": "log_loss", "min_delta": 0.01}
    promoted = _put(client, "champion", {"version": 2, "require": guard})
    assert promoted.status_code == 200, promoted.text
    comparison = promoted.json()["comparison"]
    assert comparison["candidate"]["value"] <= comparison["current"]["value"] - 0.01
    assert client.get("/v1/models/blobs@champion", headers=ALICE).json()["version"] == 2
    impossible = {"dataset_id": dataset_id, "metric": "macro_f1", "min_delta": 2.0}
    refused = _put(client, "champion", {"version": 1, "require": impossible})
    assert refused.status_code == 409
    assert "min_delta" in refused.json()["error"]["message"]


def test_guarded_promotion_feature_mismatch_is_422(alice: tuple[TestClient, str]) -> None:
    client, _ = alice
    other = upload_csv(client, b"a,b,label\n0,1,0\n1,0,1\n1,1,0\n0,0,1\n", headers=ALICE).json()
    guard = {"dataset_id": other["id"], "metric": "accuracy"}
    response = _put(client, "champion", {"version": 2, "require": guard})
    assert response.status_code == 422, response.text
    assert "require.dataset_id" in response.json()["error"]["message"]
    assert client.get("/v1/models/blobs@champion", headers=ALICE).status_code == 404


def test_alias_for_an_admin_needs_a_name_one_owner_uses(
    alice: tuple[TestClient, str], run_worker: Callable[[], None]
) -> None:
    client, _ = alice
    root = {"Authorization": "Bearer root-key-0000"}
    assert _put(client, "champion", {"version": 2}).status_code == 200
    assert client.get("/v1/models/blobs@champion", headers=root).json()["version"] == 2  # one owner: resolved
    dataset = upload_csv(client, blobs_csv(n_per_class=5, seed=4), headers=BOB, name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "name": "blobs", **WEAK}, headers=BOB)
    assert response.status_code == 202
    run_worker()
    assert client.get("/v1/models/blobs@champion", headers=root).status_code == 409
    assert client.get("/v1/models/blobs/aliases", headers=root).status_code == 409
    assert client.get("/v1/models/blobs@champion", headers=BOB).status_code == 404  # bob's lineage has none
    assert client.get("/v1/models/blobs@champion", headers=ALICE).json()["version"] == 2
