"""Progress writes are rate-limited but never lose an epoch of history, and always write the last epoch."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from worker import Store, keys
from worker.attempts import Attempts, SupersededAttemptError
from worker.progress import ProgressReporter, StopListener, eta_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _metrics(epoch: int, epochs: int) -> dict[str, float | int | None]:
    return {
        "epoch": epoch,
        "epochs": epochs,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 0.5,
        "validation_loss": None,
        "validation_accuracy": None,
        "samples_per_second": 1000.0,
    }


def test_progress_rate_limited_history_complete_last_epoch_written(
    redis_conn: redis.Redis, store: Store
) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    clock = FakeClock()
    reporter = ProgressReporter(attempts, job.id, token, start_epoch=0, min_interval=1.0, clock=clock)
    for epoch in range(1, 21):
        clock.now += 0.1  # 10 epochs a second
        reporter.epoch(_metrics(epoch, 20), final=epoch == 20)
    assert reporter.writes <= 4  # first epoch, once a second, and the last
    record = store.get_job(job.id)
    assert record is not None and [h["epoch"] for h in record.history] == list(range(1, 21))
    assert (
        record.progress is not None
        and record.progress["epoch"] == 20
        and record.progress["eta_seconds"] == 0.0
    )


def test_progress_eta_from_epoch_rate(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    clock = FakeClock()
    reporter = ProgressReporter(attempts, job.id, token, start_epoch=0, min_interval=0.0, clock=clock)
    clock.now = 2.0
    reporter.epoch(_metrics(1, 11), final=False)
    record = store.get_job(job.id)
    assert record is not None and record.progress is not None and record.progress["eta_seconds"] == 20.0


def test_progress_of_a_superseded_attempt_raises(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    reporter = ProgressReporter(attempts, job.id, token, start_epoch=0, min_interval=0.0)
    attempts.begin(job.id, started_at="t", worker="w2", heartbeat_interval=10)
    with pytest.raises(SupersededAttemptError):
        reporter.epoch(_metrics(1, 5), final=False)


def test_progress_publishes_every_epoch_after_its_write_and_status_changes(
    redis_conn: redis.Redis, store: Store
) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    pubsub = redis_conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.job_events(job.id))
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    clock = FakeClock()
    reporter = ProgressReporter(attempts, job.id, token, start_epoch=0, min_interval=1.0, clock=clock)
    published: list[dict[str, Any]] = []
    for epoch in range(1, 6):
        clock.now += 0.3
        reporter.epoch(_metrics(epoch, 5), final=epoch == 5)
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            published.append(json.loads(message["data"]))
            if published[-1]["event"] == "progress":  # published only once the epoch is stored
                stored = store.get_job(job.id)
                assert stored is not None and stored.history[-1]["epoch"] >= published[-1]["epoch"]
    assert attempts.write(job.id, token, {"status": "failed", "error": "x"})[0]
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        published.append(json.loads(message["data"]))
    pubsub.close()
    assert published[0] == {"event": "status", "status": "running", "attempt": 1}
    progress = [entry for entry in published if entry["event"] == "progress"]
    assert [entry["epoch"] for entry in progress] == [1, 2, 3, 4, 5]
    assert all(entry["progress"]["epoch"] == entry["epoch"] for entry in progress)
    record = store.get_job(job.id)
    assert record is not None and progress[-1]["progress"] == record.progress
    assert published[-1] == {"event": "status", "status": "failed", "attempt": 1}
@pytest.mark.parametrize(
    ("epoch", "epochs", "seconds", "expected"),
    [(1, 11, 2.0, 20.0), (5, 5, 3.0, 0.0), (7, 5, 3.0, 0.0), (2, 4, 0.12345, 0.247), (1, 3, None, None)],
)
def test_eta_seconds_is_epochs_left_times_seconds_per_epoch(
    epoch: int, epochs: int, seconds: float | None, expected: float | None
) -> None:
    assert eta_seconds(epoch, epochs, seconds) == expected


def test_stop_listener_sees_a_cancel_after_it_subscribed(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10)
    listener = StopListener(attempts, job.id)
    try:
        assert listener.pubsub is not None and listener() is False
        assert attempts.cancel(job.id, finished_at="t") == "stopping"
        deadline = time.monotonic() + 5.0
        while not listener() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener() is True
    finally:
        listener.close()
    assert listener.pubsub is None


def test_stop_listener_sees_a_stop_requested_before_it_subscribed(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10)
    assert attempts.cancel(job.id, finished_at="t") == "stopping"
    listener = StopListener(attempts, job.id)
    try:
        assert listener() is True
    finally:
        listener.close()
