"""GET /v1/jobs/{id}/events against uvicorn, real Redis and real RQ workers: replay, live, resume, crashes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from service.settings import Settings
from tests.live import ApiServer, Processes, api_server, blobs, children, slow_options, wait_until, worker_command
from tests.service.conftest import npz_bytes
from worker import Store, keys, reap
from worker.attempts import Attempts
from worker.records import utc_now

Event = tuple[str, dict[str, Any], str]  # (event, data, id)


@pytest.fixture()
def settings(redis_url: str, data_dir: Path) -> Settings:
    """No API keys, no reaper of its own (tests run the reaper when they mean to)."""
    return Settings(redis_url=redis_url, data_dir=data_dir, reaper_interval=3600, queue_name="events-training")


@pytest.fixture()
def server(settings: Settings) -> Iterator[ApiServer]:
    with api_server(settings) as running:
        yield running


def _stream(url: str, job_id: str, headers: dict[str, str] | None = None) -> list[Event]:
    """Every event of one connection, until the server closes it."""
    events: list[Event] = []
    timeout = httpx.Timeout(10.0, read=60.0)
    with (
        httpx.Client(base_url=url, headers=headers, timeout=timeout) as client,
        connect_sse(client, "GET", f"/v1/jobs/{job_id}/events") as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        events += [(sse.event, json.loads(sse.data), sse.id) for sse in source.iter_sse()]
    return events


def _in_background(target: Callable[[], list[Event]]) -> tuple[threading.Thread, list[list[Event]]]:
    result: list[list[Event]] = []
    thread = threading.Thread(target=lambda: result.append(target()), daemon=True)
    thread.start()
    return thread, result


def _submit(url: str, options: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    X, y = blobs()
    files = {"file": ("blobs.npz", npz_bytes(X=X, y=y), "application/octet-stream")}
    dataset = httpx.post(f"{url}/v1/datasets", files=files, headers=headers, timeout=30)
    assert dataset.status_code == 201, dataset.text
    job = httpx.post(f"{url}/v1/jobs", json={"dataset_id": dataset.json()["id"], **options}, headers=headers)
    assert job.status_code == 202, job.text
    return str(job.json()["id"])


def _epochs(events: list[Event]) -> list[int]:
    return [data["epoch"] for name, data, _ in events if name == "progress"]


def _status(store: Store, job_id: str) -> str | None:
    record = store.get_job(job_id, with_history=False)
    return None if record is None else record.status


def _statuses(events: list[Event]) -> list[str]:
    return [data["status"] for name, data, _ in events if name == "status"]


def test_events_live_job_in_order_without_duplicates_then_end(
    server: ApiServer, settings: Settings, processes: Processes
) -> None:
    job_id = _submit(server.url, {**slow_options(12), "batch_size": 32})
    thread, result = _in_background(lambda: _stream(server.url, job_id))
    time.sleep(0.3)  # let the stream subscribe while the job is still queued (it works either way)
    processes.start(worker_command(settings, name="events-worker"), name="worker")
    thread.join(timeout=120)
    (events,) = result
    assert _epochs(events) == list(range(1, 13))
    assert [sse_id for name, _, sse_id in events if name == "progress"] == [str(n) for n in range(1, 13)]
    assert _statuses(events)[-2:] == ["running", "succeeded"]
    name, final, _ = events[-1]
    assert name == "end"
    assert final["status"] == "succeeded" and final["model_id"] and final["id"] == job_id
    progress = next(data for name, data, _ in events if name == "progress")
    assert set(progress) >= {"epoch", "epochs", "train_loss", "train_accuracy", "eta_seconds"}
    assert progress["epochs"] == 12


def test_events_finished_job_replays_history_and_end_at_once(
    server: ApiServer, settings: Settings, processes: Processes
) -> None:
    job_id = _submit(server.url, {**slow_options(6), "batch_size": 64})
    processes.start(worker_command(settings, name="replay-worker"), name="worker")
    store = Store(redis.Redis.from_url(settings.redis_url), settings.blobs)
    wait_until(lambda: _status(store, job_id) == "succeeded", timeout=120, what="the job to succeed")
    events = _stream(server.url, job_id)
    assert _epochs(events) == [1, 2, 3, 4, 5, 6]
    assert _statuses(events) == ["succeeded"]
    assert [name for name, _, _ in events][-1] == "end"
    record = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
    assert [data for name, data, _ in events if name == "end"] == [record]
    # Last-Event-ID: k resumes after epoch k
    resumed = _stream(server.url, job_id, headers={"Last-Event-ID": "4"})
    assert _epochs(resumed) == [5, 6]
    assert resumed[-1][0] == "end"


def test_events_of_another_keys_job_are_404(make_client: Any) -> None:
    client = make_client(api_keys="alice-key:user,bob-key:user")
    alice = {"Authorization": "Bearer alice-key"}
    X, y = blobs(n=30)
    files = {"file": ("blobs.npz", npz_bytes(X=X, y=y), "application/octet-stream")}
    dataset_id = client.post("/v1/datasets", files=files, headers=alice).json()["id"]
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 2}, headers=alice).json()["id"]
    answer = client.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": "Bearer bob-key"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/jobs/{job_id}/events").status_code == 401
    bad = client.get(f"/v1/jobs/{job_id}/events", headers={**alice, "Last-Event-ID": "minus one"})
    assert bad.status_code == 422
    assert "last-event-id" in bad.json()["error"]["message"].lower()


def _entry(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "epochs": 5, "train_loss": 1.0 / epoch, "train_accuracy": 0.5}


def test_events_fill_gaps_of_lost_messages_from_the_store_and_skip_repeats(
    server: ApiServer, settings: Settings
) -> None:
    job_id = _submit(server.url, {"epochs": 5})  # no worker on this queue: the test plays the worker
    conn = redis.Redis.from_url(settings.redis_url)
    thread, result = _in_background(lambda: _stream(server.url, job_id))
    wait_until(lambda: conn.pubsub_numsub(keys.job_events(job_id))[0][1] == 1, timeout=30, what="a subscriber")
    attempts = Attempts(conn)
    token = attempts.begin(job_id, started_at=utc_now(), worker="test", heartbeat_interval=1).token
    # Epochs 1-3 are stored but their messages are lost; then a message of epoch 5 arrives before epoch 4
    # is stored, and a stale repeat of epoch 2.
    assert attempts.write(job_id, token, {"progress": _entry(3)}, [_entry(1), _entry(2), _entry(3)])[0]
    channel = keys.job_events(job_id)
    conn.publish(channel, json.dumps({"event": "progress", "epoch": 5, "progress": _entry(5)}))
    conn.publish(channel, json.dumps({"event": "progress", "epoch": 2, "progress": _entry(2)}))
    assert attempts.write(job_id, token, {"progress": _entry(5)}, [_entry(4), _entry(5)])[0]
    assert attempts.write(job_id, token, {"status": "failed", "error": "stopped by the test"})[0]
    thread.join(timeout=60)
    (events,) = result
    assert _epochs(events) == [1, 2, 3, 4, 5]
    assert _statuses(events) == ["queued", "running", "failed"]
    assert events[-1][0] == "end" and events[-1][1]["error"] == "stopped by the test"


@pytest.mark.slow
def test_events_worker_killed_mid_stream_shows_stalled_requeue_then_resumed_epochs(
    server: ApiServer, settings: Settings, processes: Processes
) -> None:
    conn = redis.Redis.from_url(settings.redis_url)
    store = Store(conn, settings.blobs)
    job_id = _submit(server.url, slow_options(40))
    thread, result = _in_background(lambda: _stream(server.url, job_id))
    worker = processes.start(worker_command(settings, name="doomed"), name="doomed")
    wait_until(lambda: len(store.get_job(job_id).history) >= 4, timeout=120, what="four epochs")  # type: ignore[union-attr]
    (horse,) = children(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    worker.wait(timeout=10)
    killed_at = len(store.get_job(job_id).history)  # type: ignore[union-attr]
    assert reap(conn, store, queue_name=settings.queue_name, now=time.time() + 10) == 0
    assert _status(store, job_id) == "stalled"
    assert reap(conn, store, queue_name=settings.queue_name, now=time.time() + 120) == 1
    assert _status(store, job_id) == "queued"
    processes.start(worker_command(settings, name="rescuer"), name="rescuer")
    thread.join(timeout=180)
    (events,) = result
    assert _epochs(events) == list(range(1, 41))
    statuses = [(data["status"], data["attempt"]) for name, data, _ in events if name == "status"]
    assert statuses[-4:] == [("stalled", 1), ("queued", 1), ("running", 2), ("succeeded", 2)]
    names = [name if name != "progress" else data["epoch"] for name, data, _ in events]
    stalled = names.index("status", names.index(killed_at))
    assert any(isinstance(name, int) and name > killed_at for name in names[stalled:])
    assert events[-1][0] == "end" and events[-1][1]["attempts"] == 2


def test_events_client_disconnect_releases_the_subscription(server: ApiServer, settings: Settings) -> None:
    job_id = _submit(server.url, {"epochs": 5})  # stays queued: no worker on this queue
    conn = redis.Redis.from_url(settings.redis_url)

    def subscribers() -> int:
        return int(conn.pubsub_numsub(keys.job_events(job_id))[0][1])

    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        connect_sse(client, "GET", f"/v1/jobs/{job_id}/events") as source,
    ):
        events = source.iter_sse()  # held: a dropped iterator closes the connection (a real disconnect)
        first = next(events)
        assert (first.event, json.loads(first.data)) == ("status", {"status": "queued", "attempt": 0})
        wait_until(lambda: subscribers() == 1, timeout=10, what="the open stream's subscription")
    wait_until(lambda: subscribers() == 0, timeout=30, what="the stream's subscription to be released")
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}").json()["status"] == "queued"  # polling still works
