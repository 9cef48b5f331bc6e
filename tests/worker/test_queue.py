"""Enqueueing, queue position, cancel of queued jobs, timeouts and the reaper (no training here)."""

from __future__ import annotations

import json
import time
import zlib

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.worker.conftest import QUEUE
from worker import (
    Store,
    cancel_job,
    enqueue_training,
    job_timeout,
    queue_depth,
    queue_position,
    reap,
)
from worker.attempts import Attempts
from worker.records import utc_now


def test_job_timeout_grows_with_size_and_is_clamped() -> None:
    small = job_timeout(100, 1_000, 10, minimum=60, maximum=3600)
    large = job_timeout(100_000, 1_000_000, 100, minimum=60, maximum=10**9)
    assert small == 60
    assert large > 60 * 60
    assert job_timeout(100_000, 1_000_000, 100, minimum=60, maximum=3600) == 3600


def test_enqueue_uses_json_and_only_the_job_id(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({"epochs": 2}, owner=None, dataset_id="d", name="j")
    enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=123, retries=2)
    rq_job = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    assert rq_job.func_name == "worker.jobs.run_training"
    assert rq_job.args == [job.id] and rq_job.kwargs == {}
    assert rq_job.timeout == 123 and rq_job.retries_left == 2
    raw = redis_conn.hget(rq_job.key, "data")
    assert isinstance(raw, bytes)
    payload = json.loads(zlib.decompress(raw))  # JSON (zlib-compressed by RQ), not a pickle
    assert payload[0] == "worker.jobs.run_training" and payload[2] == [job.id]
    record = store.get_job(job.id)
    assert record is not None and record.timeout == 123


def test_queue_position_and_depth(redis_conn: redis.Redis, store: Store) -> None:
    jobs = [store.create_job({}, owner=None, dataset_id="d", name=f"j{i}") for i in range(3)]
    for job in jobs:
        enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=60, retries=0)
    assert [queue_position(redis_conn, job.id, queue_name=QUEUE) for job in jobs] == [0, 1, 2]
    assert queue_depth(redis_conn, queue_name=QUEUE) == 3
    assert queue_position(redis_conn, "0" * 32, queue_name=QUEUE) is None


def test_cancel_queued_job_removes_it_and_it_never_starts(redis_conn: redis.Redis, store: Store) -> None:
    first = store.create_job({}, owner=None, dataset_id="d", name="a")
    second = store.create_job({}, owner=None, dataset_id="d", name="b")
    for job in (first, second):
        enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=60, retries=2)
    record = cancel_job(redis_conn, store, first.id, queue_name=QUEUE)
    assert record.status == "canceled" and record.finished_at is not None
    assert queue_position(redis_conn, first.id, queue_name=QUEUE) is None
    assert queue_position(redis_conn, second.id, queue_name=QUEUE) == 0
    rq_job = Job.fetch(first.id, connection=redis_conn, serializer=JSONSerializer)
    assert rq_job.get_status() == JobStatus.CANCELED
    # even if a worker had dequeued it already, the start guard refuses to run it
    begin = Attempts(redis_conn).begin(first.id, started_at="t", worker="w", heartbeat_interval=10)
    assert begin.token == 0 and begin.previous_status == "canceled"


def test_cancel_running_job_sets_the_stop_flag(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="a")
    attempts = Attempts(redis_conn)
    attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10)
    assert not attempts.stop_requested(job.id)
    record = cancel_job(redis_conn, store, job.id, queue_name=QUEUE)
    assert record.status == "running"  # it ends `canceled` at the next epoch boundary
    assert attempts.stop_requested(job.id)


def test_reap_fails_a_job_that_was_never_enqueued(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="lost")
    assert reap(redis_conn, store, queue_name=QUEUE) == 0  # within the grace period
    assert reap(redis_conn, store, queue_name=QUEUE, now=time.time() + 3600) == 1
    record = store.get_job(job.id)
    assert record is not None and record.status == "failed" and record.error == "the job was never enqueued"


def test_reap_fails_a_running_job_whose_rq_job_failed(redis_conn: redis.Redis, store: Store) -> None:
    job = store.create_job({}, owner=None, dataset_id="d", name="dead")
    enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=60, retries=0)
    token = Attempts(redis_conn).begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    rq_job = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
    rq_job.set_status(JobStatus.FAILED)
    assert reap(redis_conn, store, queue_name=QUEUE) == 1
    record = store.get_job(job.id)
    assert record is not None and record.status == "failed" and "no retries" in (record.error or "")
    assert Attempts(redis_conn).write(job.id, token, {}) == (False, "")  # the orphan attempt can no longer commit


def test_reap_deletes_finished_jobs_past_their_retention(redis_conn: redis.Redis, store: Store) -> None:
    done = store.create_job({}, owner=None, dataset_id="d", name="done")
    store.set_job_fields(done.id, status="failed", error="x", finished_at=utc_now())
    day = 86400.0
    reap(redis_conn, store, queue_name=QUEUE, job_retention_seconds=day)
    assert store.get_job(done.id) is not None  # finished just now
    reap(redis_conn, store, queue_name=QUEUE, now=time.time() + 2 * day, job_retention_seconds=day)
    assert store.get_job(done.id) is None and store.job_counts()["failed"] == 0
