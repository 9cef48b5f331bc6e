"""Progress writes are rate-limited but never lose an epoch of history, and always write the last epoch."""

from __future__ import annotations

import pytest
import redis

from worker import Store
from worker.attempts import Attempts, SupersededAttemptError
from worker.progress import ProgressReporter, eta_seconds


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


@pytest.mark.parametrize(
    ("epoch", "epochs", "seconds", "expected"),
    [(1, 11, 2.0, 20.0), (5, 5, 3.0, 0.0), (7, 5, 3.0, 0.0), (2, 4, 0.12345, 0.247), (1, 3, None, None)],
)
def test_eta_seconds_is_epochs_left_times_seconds_per_epoch(
    epoch: int, epochs: int, seconds: float | None, expected: float | None
) -> None:
    assert eta_seconds(epoch, epochs, seconds) == expected
