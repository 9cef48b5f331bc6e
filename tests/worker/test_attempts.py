"""Fencing: only the current attempt of a job may write; the API's transitions depend on the status."""

from __future__ import annotations

import redis

from worker import Store, keys
from worker.attempts import Attempts


def test_begin_takes_increasing_tokens_and_counts_attempts(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    first = attempts.begin(job.id, started_at="t1", worker="w1", heartbeat_interval=10)
    second = attempts.begin(job.id, started_at="t2", worker="w2", heartbeat_interval=10)
    assert (first.token, second.token) == (1, 2)
    record = store.get_job(job.id)
    assert record is not None and record.status == "running" and record.attempts == 2
    assert record.started_at == "t1"  # the first start is kept


def test_stale_token_cannot_write_progress_checkpoint_or_commit(
    redis_conn: redis.Redis, store: Store
) -> None:
    job = store.create_job({}, owner="alice", dataset_id="d", name="fenced")
    attempts = Attempts(redis_conn)
    stale = attempts.begin(job.id, started_at="t", worker="w1", heartbeat_interval=10).token
    current = attempts.begin(job.id, started_at="t", worker="w2", heartbeat_interval=10).token
    assert attempts.write(job.id, current, {}) == (True, "")  # the newest attempt holds the fence

    assert attempts.write(job.id, stale, {"progress": {"epoch": 9}}, [{"epoch": 9}]) == (False, "")
    assert attempts.set_checkpoint(job.id, stale, path="p", sha256="s", epoch=9) == (False, "")
    version, _ = attempts.commit_model(
        job.id, stale, model_id="m-stale", name="fenced", owner="alice", meta={"id": "m-stale"}, score=1.0,
        job_fields={"status": "succeeded", "model_id": "m-stale"},
    )  # fmt: skip
    assert version == 0
    record = store.get_job(job.id)
    assert (
        record is not None and record.status == "running" and record.progress is None and record.history == []
    )
    assert store.get_model("m-stale") is None
    assert not redis_conn.exists(keys.model_version_counter("alice", "fenced"))
    assert not redis_conn.exists(keys.job_checkpoint(job.id))

    applied, _ = attempts.write(job.id, current, {"progress": {"epoch": 1}}, [{"epoch": 1}])
    assert applied
    record = store.get_job(job.id)
    assert record is not None and record.progress == {"epoch": 1} and record.history == [{"epoch": 1}]


def test_finished_job_cannot_be_started_or_written_again(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    assert attempts.write(job.id, token, {"status": "failed", "error": "x"})[0]
    again = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10)
    assert again.token == 0 and again.previous_status == "failed"
    assert attempts.write(job.id, token, {"status": "succeeded"}) == (False, "")
    assert attempts.begin("0" * 32, started_at="t", worker="w", heartbeat_interval=10).token == -1


def test_history_is_trimmed_to_the_resumed_epoch(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    first = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    attempts.write(job.id, first, {}, [{"epoch": e} for e in (1, 2, 3, 4)], trim_history=0)
    second = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    attempts.write(job.id, second, {}, [{"epoch": 3}], trim_history=2)  # resumed from the epoch-2 checkpoint
    record = store.get_job(job.id)
    assert record is not None and [h["epoch"] for h in record.history] == [1, 2, 3]
    assert store.epochs_trained() == 3  # the kept counter follows the trim


def test_cancel_disowns_running_attempts_of_a_stalled_job(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="j")
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    assert attempts.transition(job.id, allowed=("running",), fields={"status": "stalled"})
    assert attempts.cancel(job.id, finished_at="t") == "canceled"
    assert attempts.write(job.id, token, {"progress": {}}) == (False, "")
    record = store.get_job(job.id)
    assert record is not None and record.status == "canceled"
    assert attempts.cancel(job.id, finished_at="t") == "canceled"  # already canceled: reports the status
