"""Sweeps through the API with real RQ workers (burst mode): children, statistics, halving, limits, cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from redis.lock import Lock

import worker.sweeps
from tests.service.conftest import ClientFactory, blobs_csv, upload_csv
from worker import keys

BASE = {"hidden_layers": [4], "epochs": 3, "batch_size": 16, "validation_fraction": 0.2}


def _dataset(client: TestClient) -> str:
    dataset: dict[str, Any] = upload_csv(client, blobs_csv(), name="blobs").json()
    return str(dataset["id"])


def _start(client: TestClient, **spec: Any) -> dict[str, Any]:
    response = client.post("/v1/sweeps", json={"dataset_id": _dataset(client), "base": BASE, **spec})
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/sweeps/{response.json()['id']}"
    body: dict[str, Any] = response.json()
    return body


def _metric(client: TestClient, model_id: str, metric: str = "validation_loss") -> float:
    return float(client.get(f"/v1/models/{model_id}").json()["metrics"][metric])


def test_sweep_grid_times_seeds_all_succeed_with_numpy_statistics(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    grid = {"learning_rate": [0.05, 0.001], "l2": [0.0, 0.01]}
    created = _start(client, name="grid", grid=grid, seeds=[3, 4], alias="best")
    assert created["status"] == "queued" and created["counts"]["queued"] == 8
    assert [trial["overrides"] for trial in created["trials"]] == [
        {"learning_rate": 0.05, "l2": 0.0},
        {"learning_rate": 0.05, "l2": 0.01},
        {"learning_rate": 0.001, "l2": 0.0},
        {"learning_rate": 0.001, "l2": 0.01},
    ]

    run_worker()

    sweep = client.get(f"/v1/sweeps/{created['id']}").json()
    assert sweep["status"] == "succeeded", sweep
    assert sweep["counts"]["succeeded"] == 8 and sweep["finished_at"] is not None
    for trial in sweep["trials"]:
        assert trial["status"] == "succeeded" and [seed["seed"] for seed in trial["seeds"]] == [3, 4]
        values = [_metric(client, seed["model_id"]) for seed in trial["seeds"]]
        assert [seed["metric"] for seed in trial["seeds"]] == values
        assert trial["mean"] == float(np.mean(values)) and trial["std"] == float(np.std(values))
        for seed in trial["seeds"]:
            job = client.get(f"/v1/jobs/{seed['job_id']}").json()
            assert job["sweep_id"] == sweep["id"] and job["config"]["seed"] == seed["seed"]
            assert job["config"]["learning_rate"] == trial["overrides"]["learning_rate"]
    keys = [(row["mean"], row["std"], row["index"]) for row in sweep["leaderboard"]]
    assert keys == sorted(keys) and len(keys) == 4
    top = sweep["trials"][sweep["leaderboard"][0]["index"]]
    best_seed = min(top["seeds"], key=lambda seed: seed["metric"])
    assert sweep["best"]["trial"] == top["index"] and sweep["best"]["model_id"] == best_seed["model_id"]
    assert sweep["best"]["config"]["learning_rate"] == top["overrides"]["learning_rate"]
    best_name = f"grid-t{top['index']}-s{best_seed['seed']}"
    assert client.get(f"/v1/models/{best_name}@best").json()["id"] == best_seed["model_id"]
    assert sweep["alias_status"].startswith(f"set: {best_name}@best")
    jobs = client.get("/v1/jobs").json()
    assert jobs["total"] == 8 and {job["sweep_id"] for job in jobs["items"]} == {sweep["id"]}
    assert client.get("/v1/models").json()["total"] == 8


def test_sweep_accuracy_leaderboard_puts_the_highest_mean_first(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    created = _start(client, grid={"learning_rate": [0.0001, 0.05]}, metric="validation_accuracy", seeds=[0, 1])
    run_worker()
    sweep = client.get(f"/v1/sweeps/{created['id']}").json()
    means = [row["mean"] for row in sweep["leaderboard"]]
    assert means == sorted(means, reverse=True)
    assert sweep["best"]["metric"] == max(seed["metric"] for seed in sweep["trials"][sweep["best"]["trial"]]["seeds"])


def _rung_reference(client: TestClient, rung_jobs: dict[int, list[str]], eta: int) -> list[int]:
    """The trials a halving rung should keep, from the children's stored histories (last epoch's loss)."""
    means = {}
    for index, job_ids in rung_jobs.items():
        losses = [client.get(f"/v1/jobs/{job_id}").json()["history"][-1]["validation_loss"] for job_id in job_ids]
        means[index] = (float(np.mean(losses)), float(np.std(losses)), index)
    ranked = sorted(means, key=lambda index: means[index])
    return sorted(ranked[: max(1, len(ranked) // eta)])


def test_sweep_halving_promotes_the_best_trials_from_their_own_state(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    spec = {
        "base": {**BASE, "epochs": 8},
        "grid": {"learning_rate": [0.00001, 0.05, 0.001, 0.02]},
        "seeds": [0, 1],
        "early_stop": {"type": "halving", "min_epochs": 2, "eta": 2},
    }
    created = _start(client, **spec)
    assert created["counts"]["queued"] == 8 and created["rungs"] == [{"epochs": 2, "trials": [0, 1, 2, 3]}]

    run_worker()

    sweep = client.get(f"/v1/sweeps/{created['id']}").json()
    assert sweep["status"] == "succeeded", sweep
    assert [rung["epochs"] for rung in sweep["rungs"]] == [2, 4, 8]
    jobs = {job["id"]: job for job in client.get("/v1/jobs", params={"limit": 100}).json()["items"]}
    assert len(jobs) == 8 + 4 + 2
    by_rung: list[dict[int, list[str]]] = [{} for _ in sweep["rungs"]]
    for job in jobs.values():
        rung = [2, 4, 8].index(job["config"]["epochs"])
        rate = job["config"]["learning_rate"]
        index = next(t["index"] for t in sweep["trials"] if t["overrides"]["learning_rate"] == rate)
        by_rung[rung].setdefault(index, []).append(job["id"])
    for rung in (1, 2):
        assert sorted(by_rung[rung]) == sweep["rungs"][rung]["trials"]
        assert sweep["rungs"][rung]["trials"] == _rung_reference(client, by_rung[rung - 1], eta=2)
    final = sweep["rungs"][2]["trials"]
    assert [row["index"] for row in sweep["leaderboard"]][: len(final)] == final
    assert sweep["best"]["trial"] == final[0] and sweep["best"]["config"]["epochs"] == 8
    continued = client.get(f"/v1/jobs/{sweep['trials'][final[0]]['seeds'][0]['job_id']}").json()
    assert [entry["epoch"] for entry in continued["history"]] == list(range(1, 9))

    # continuing to 8 epochs is the very run that trains 8 epochs in one job
    direct = client.post(
        "/v1/jobs",
        json={"dataset_id": continued["dataset_id"], **{**continued["config"], "seed": 0}},
    )
    assert direct.status_code == 202, direct.text
    run_worker()
    alone = client.get(f"/v1/jobs/{direct.json()['id']}").json()
    assert [e["validation_loss"] for e in alone["history"]] == [e["validation_loss"] for e in continued["history"]]


def test_sweep_random_space_is_drawn_from_its_own_seed(client: TestClient) -> None:
    space = {
        "learning_rate": {"log_uniform": [1e-4, 1e-1]},
        "batch_size": {"choice": [16, 32]},
        "l2": {"uniform": [0, 0.01]},
        "hidden_layers": {"choice": [[4], [8, 4]]},
    }
    first = _start(client, random={"n_trials": 5, "seed": 7, "space": space})
    again = _start(client, random={"n_trials": 5, "seed": 7, "space": dict(reversed(space.items()))})
    other = _start(client, random={"n_trials": 5, "seed": 8, "space": space})
    trials = [trial["overrides"] for trial in first["trials"]]
    assert trials == [trial["overrides"] for trial in again["trials"]]
    assert trials != [trial["overrides"] for trial in other["trials"]]
    for trial in trials:
        assert 1e-4 <= trial["learning_rate"] <= 1e-1 and 0 <= trial["l2"] <= 0.01
        assert trial["batch_size"] in (16, 32) and trial["hidden_layers"] in ([4], [8, 4])


@pytest.mark.parametrize(
    ("spec", "field", "trial"),
    [
        ({"grid": {"learning_rate": [0.01, -1.0]}}, "grid.learning_rate", 1),
        ({"grid": {"hidden_layers": [[4], [0]]}}, "grid.hidden_layers[0]", 1),
        ({"grid": {"optimizer": ["adam", "lbfgs"]}}, "grid.optimizer", 1),
        ({"grid": {"learning_rate": [0.01]}, "base": {**BASE, "epochs": 0}}, "base.epochs", 0),
        ({"grid": {"learning_rate": [0.01]}, "base": {**BASE, "dropout": 0.5}}, "base.dropout", 0),
        ({"grid": {"epochs": [2, 20000]}}, "grid.epochs", 1),
        ({"grid": {"validation_fraction": [0.2, 0.0]}}, "grid.validation_fraction", 1),
        ({"random": {"n_trials": 3, "seed": 1, "space": {"batch_size": {"uniform": [8, 64]}}}},
         "random.space.batch_size", 0),
    ],
)
def test_sweep_bad_option_gets_422_naming_field_and_trial(
    client: TestClient, spec: dict[str, Any], field: str, trial: int
) -> None:
    response = client.post("/v1/sweeps", json={"dataset_id": _dataset(client), "base": BASE, **spec})
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == field and detail["trial"] == trial
    assert f"trial {trial}" in response.json()["error"]["message"]
    assert client.get("/v1/jobs").json()["total"] == 0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"grid": {"seed": [1, 2]}}, "grid.seed"),
        ({"grid": {"learning_rate": [0.1]}, "random": {"n_trials": 1, "space": {"l2": {"choice": [0]}}}}, "body"),
        ({}, "body"),
        ({"grid": {"learning_rate": [0.1]}, "seeds": [1, 1]}, "body"),
        ({"grid": {"learning_rate": [0.1]}, "metric": "train_loss"}, "metric"),
        ({"grid": {"learning_rate": [0.1]}, "early_stop": {"type": "halving", "min_epochs": 5, "eta": 2}},
         "early_stop.min_epochs"),
        ({"grid": {"epochs": [2, 3]}, "early_stop": {"type": "halving", "min_epochs": 1, "eta": 2}}, "grid.epochs"),
        ({"random": {"n_trials": 2, "space": {"l2": {"log_uniform": [0, 1]}}}}, "random.space.l2"),
    ],
)
def test_sweep_bad_spec_gets_422(client: TestClient, spec: dict[str, Any], field: str) -> None:
    response = client.post("/v1/sweeps", json={"dataset_id": _dataset(client), "base": BASE, **spec})
    assert response.status_code == 422, response.text
    fields = [detail.get("field", "") for detail in response.json()["error"]["details"]]
    assert any(name.startswith(field) for name in fields), fields


def test_sweep_above_max_sweep_jobs_gets_422(make_client: ClientFactory) -> None:
    client = make_client(max_sweep_jobs=5)
    response = client.post(
        "/v1/sweeps",
        json={"dataset_id": _dataset(client), "base": BASE, "grid": {"l2": [0.1, 0.2, 0.3]}, "seeds": [0, 1]},
    )
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["limit"] == "max_sweep_jobs" and detail["value"] == 6 and detail["maximum"] == 5


def test_sweep_beyond_the_queue_limit_is_refused_whole(make_client: ClientFactory) -> None:
    client = make_client(max_queued_jobs_per_key=5)
    dataset_id = _dataset(client)
    assert client.post("/v1/jobs", json={"dataset_id": dataset_id, **BASE}).status_code == 202
    spec = {"dataset_id": dataset_id, "base": BASE, "grid": {"learning_rate": [0.1, 0.2, 0.3]}, "seeds": [0, 1]}
    refused = client.post("/v1/sweeps", json=spec)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["details"][0]["value"] == 7
    assert client.get("/v1/jobs").json()["total"] == 1 and client.get("/v1/sweeps").json()["total"] == 0
    accepted = client.post("/v1/sweeps", json={**spec, "seeds": [0]})
    assert accepted.status_code == 202, accepted.text
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["total"] == 4


def test_sweep_cancel_stops_every_child_and_delete_keeps_them(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    created = _start(client, grid={"learning_rate": [0.1, 0.2]}, seeds=[0, 1, 2])
    assert client.delete(f"/v1/sweeps/{created['id']}").status_code == 409
    canceled = client.post(f"/v1/sweeps/{created['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled" and canceled.json()["counts"]["canceled"] == 6
    run_worker()
    sweep = client.get(f"/v1/sweeps/{created['id']}").json()
    assert sweep["status"] == "canceled" and sweep["best"] is None and sweep["finished_at"] is not None
    assert client.get("/v1/jobs", params={"status": "canceled"}).json()["total"] == 6
    assert client.post(f"/v1/sweeps/{created['id']}/cancel").status_code == 409
    assert client.delete(f"/v1/sweeps/{created['id']}").status_code == 204
    assert client.get(f"/v1/sweeps/{created['id']}").status_code == 404
    assert client.get("/v1/jobs").json()["total"] == 6


def test_sweep_advance_while_a_child_is_active_does_not_wait_for_the_lock(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _start(client, grid={"learning_rate": [0.1, 0.2]}, seeds=[0])
    store = client.app.state.backprop.store  # type: ignore[attr-defined]
    monkeypatch.setattr(worker.sweeps, "_LOCK_WAIT_SECONDS", 0.2)
    held = Lock(store.redis, keys.sweep_lock(created["id"]), timeout=30)
    assert held.acquire(blocking=False)
    try:
        worker.sweeps.advance_sweep(store, created["id"])  # its children are queued: nothing to decide
    finally:
        held.release()
    sweep = client.get(f"/v1/sweeps/{created['id']}").json()
    assert sweep["status"] == "queued" and sweep["counts"]["queued"] == 2


def test_sweep_of_another_key_is_not_found(make_client: ClientFactory) -> None:
    client = make_client(api_keys="alice-key:user,bob-key:user")
    alice = {"Authorization": "Bearer alice-key"}
    dataset = upload_csv(client, blobs_csv(), headers=alice).json()
    response = client.post(
        "/v1/sweeps", json={"dataset_id": dataset["id"], "base": BASE, "grid": {"l2": [0.0]}}, headers=alice
    )
    assert response.status_code == 202, response.text
    bob = {"Authorization": "Bearer bob-key"}
    assert client.get(f"/v1/sweeps/{response.json()['id']}", headers=bob).status_code == 404
    assert client.get("/v1/sweeps", headers=bob).json()["total"] == 0
    assert client.get("/v1/sweeps", headers=alice).json()["total"] == 1
    foreign = client.post("/v1/sweeps", json={"dataset_id": dataset["id"], "base": BASE, "grid": {"l2": [0.0]}},
                          headers=bob)
    assert foreign.status_code == 404


def test_sweep_trial_beyond_a_compute_limit_names_the_limit_and_trial(make_client: ClientFactory) -> None:
    client = make_client(max_layer_width=16)
    spec = {"dataset_id": _dataset(client), "base": BASE, "grid": {"hidden_layers": [[8], [8, 32]]}}
    response = client.post("/v1/sweeps", json=spec)
    assert response.status_code == 422, response.text
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == "grid.hidden_layers[1]" and detail["trial"] == 1
    assert detail["limit"] == "max_layer_width" and detail["value"] == 32 and detail["maximum"] == 16


def test_sweep_children_are_queued_longest_first_ties_in_trial_order(client: TestClient) -> None:
    grid = {"hidden_layers": [[4], [64, 64]], "batch_size": [16, 4]}
    created = _start(client, grid=grid, seeds=[0, 1])
    state = client.app.state.backprop  # type: ignore[attr-defined]
    queued = [job_id.decode() for job_id in state.redis.lrange(f"rq:queue:{state.settings.queue_name}", 0, -1)]
    jobs = {trial["index"]: [seed["job_id"] for seed in trial["seeds"]] for trial in created["trials"]}
    # trials: 0 [4]/16, 1 [4]/4, 2 [64,64]/16, 3 [64,64]/4; the wide net with small batches is the longest
    assert queued == [*jobs[3], *jobs[2], *jobs[1], *jobs[0]]
