"""Memory and response sizes stay bounded: the model cache in bytes, histories out of lists and paged."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from service.model_cache import ModelCache
from tests.service.conftest import ClientFactory, blobs_csv, upload_csv


def test_model_cache_evicts_least_recent_by_bytes() -> None:
    cache: ModelCache[bytes] = ModelCache(maxsize=10, max_bytes=100, weigh=len)
    cache.get(("a", "1"), lambda: b"a" * 40)
    cache.get(("b", "1"), lambda: b"b" * 40)
    assert cache.get(("a", "1"), lambda: b"reloaded") == (b"a" * 40, True)  # a is now the most recent
    cache.get(("c", "1"), lambda: b"c" * 40)  # 120 bytes > 100: b (least recent) goes
    assert len(cache) == 2 and cache.nbytes == 80
    assert cache.peek(("b", "1")) is None
    assert cache.peek(("a", "1")) == b"a" * 40 and cache.peek(("c", "1")) == b"c" * 40
    cache.invalidate("a")
    assert cache.nbytes == 40


def test_model_cache_serves_but_never_keeps_a_model_over_the_bound() -> None:
    cache: ModelCache[bytes] = ModelCache(maxsize=10, max_bytes=100, weigh=len)
    cache.get(("small", "1"), lambda: b"s" * 10)
    model, hit = cache.get(("huge", "1"), lambda: b"h" * 101)
    assert model == b"h" * 101 and not hit
    assert cache.peek(("huge", "1")) is None
    assert cache.peek(("small", "1")) == b"s" * 10 and cache.nbytes == 10


def _train(client: TestClient, run_worker: Callable[[], None], epochs: int, name: str) -> dict[str, str]:
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    spec = {"dataset_id": dataset_id, "hidden_layers": [4], "epochs": epochs, "name": name}
    job = client.post("/v1/jobs", json=spec).json()
    run_worker()
    return {"job_id": job["id"], "model_id": client.get(f"/v1/jobs/{job['id']}").json()["model_id"]}


def test_predict_model_cache_bytes_setting_bounds_the_api_cache(
    make_client: ClientFactory, run_worker: Callable[[], None]
) -> None:
    client = make_client(model_cache_bytes=1)  # no model fits: every prediction loads it
    ids = _train(client, run_worker, 1, "tiny")
    for _ in range(2):
        response = client.post(f"/v1/models/{ids['model_id']}/predict", json={"instances": [[0.0] * 3]})
        assert response.status_code == 200
    text = client.get("/metrics").text
    assert "backprop_model_cache_misses_total 2.0" in text
    assert "backprop_model_cache_hits_total 0.0" in text


def test_lists_leave_histories_out_item_routes_page_them(
    client: TestClient, run_worker: Callable[[], None]
) -> None:
    ids = _train(client, run_worker, 6, "paged")

    for path in ("/v1/jobs", "/v1/models"):
        items = client.get(path).json()["items"]
        assert len(items) == 1
        assert "history" not in items[0] and "history_total" not in items[0]
    assert "history" not in client.get("/v1/jobs", params={"status": "succeeded"}).json()["items"][0]

    for path in (f"/v1/jobs/{ids['job_id']}", f"/v1/models/{ids['model_id']}"):
        whole = client.get(path).json()
        assert [entry["epoch"] for entry in whole["history"]] == [1, 2, 3, 4, 5, 6]
        assert whole["history_total"] == 6 and whole["history_offset"] == 0
        page = client.get(path, params={"history_offset": 2, "history_limit": 3}).json()
        assert [entry["epoch"] for entry in page["history"]] == [3, 4, 5]
        assert page["history_total"] == 6 and page["history_offset"] == 2
        past_the_end = client.get(path, params={"history_offset": 10}).json()
        assert past_the_end["history"] == [] and past_the_end["history_total"] == 6
        too_many = client.get(path, params={"history_limit": 10_001})
        assert too_many.status_code == 422 and "history_limit" in too_many.json()["error"]["message"]
