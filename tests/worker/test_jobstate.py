"""The job state machine against the real Redis: random create / begin / progress / checkpoint / cancel /
kill / re-queue / commit / fail / delete sequences, with stale tokens, checked after every step."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from worker import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    JobNotFinishedError,
    JobStatus,
    Store,
    keys,
)
from worker.attempts import Attempts

OWNERS = ("alice", "bob", None)
ALIVE = (JobStatus.RUNNING, JobStatus.STALLED)


@dataclass
class JobModel:
    """What the store should hold for one job."""

    owner: str | None
    status: JobStatus = JobStatus.QUEUED
    fence: int = 0
    attempts: int = 0
    tokens: list[int] = field(default_factory=list)
    frozen: tuple[Any, ...] | None = None  # the stored record when it became terminal


def _decode(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class JobStateMachine(RuleBasedStateMachine):
    """Drives Store and Attempts like the API, the reaper and workers do; a model says what must follow."""

    def __init__(self, connection: redis.Redis, blob_dir: Path) -> None:
        super().__init__()
        connection.flushall()
        self.redis = connection
        self.store = Store(connection, blob_dir)
        self.attempts = Attempts(connection)
        self.jobs: dict[str, JobModel] = {}
        self.order: list[str] = []
        self.events: dict[str, list[dict[str, Any]]] = {}  # expected, not yet seen
        self.sentinels = itertools.count()
        self.pubsub = connection.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.psubscribe(keys.job_events("*"))
        self._drain()

    def teardown(self) -> None:
        self.pubsub.close()

    # --- helpers ----------------------------------------------------------------------------------
    def _pick(self, index: int) -> tuple[str, JobModel]:
        job_id = self.order[index % len(self.order)]
        return job_id, self.jobs[job_id]

    def _token(self, job: JobModel, choice: int) -> int:
        """One of the tokens this job's attempts were given (the last is usually current), or 0."""
        options = [0, *job.tokens]
        return options[choice % len(options)]

    def _stored(self, job_id: str) -> tuple[Any, ...]:
        return (
            self.redis.hgetall(keys.job(job_id)),
            self.redis.lrange(keys.job_history(job_id), 0, -1),
            self.redis.hgetall(keys.job_checkpoint(job_id)),
        )

    def _moved(self, job_id: str, job: JobModel, status: JobStatus) -> None:
        assert status == job.status or status in TRANSITIONS[job.status]
        if status != job.status:
            expected = {"event": "status", "status": status.value, "attempt": job.attempts}
            self.events.setdefault(job_id, []).append(expected)
        job.status = status
        if status in TERMINAL_STATUSES:
            job.frozen = self._stored(job_id)

    def _fenced_ok(self, job: JobModel, token: int) -> bool:
        return token == job.fence and job.status in ALIVE

    def _drain(self) -> dict[str, list[dict[str, Any]]]:
        """Status events published so far, per job id (a sentinel message marks the end)."""
        sentinel = f"sentinel-{next(self.sentinels)}"
        self.redis.publish(keys.job_events(sentinel), "{}")
        seen: dict[str, list[dict[str, Any]]] = {}
        for _ in range(10_000):
            message = self.pubsub.get_message(timeout=1.0)
            if message is None:  # a subscription confirmation, or nothing yet
                continue
            job_id = _decode(message["channel"]).split(":")[2]
            if job_id == sentinel:
                return seen
            seen.setdefault(job_id, []).append(json.loads(message["data"]))
        raise AssertionError("the sentinel event never arrived")

    # --- the API's side ---------------------------------------------------------------------------
    @rule(owner=st.sampled_from(OWNERS))
    def create(self, owner: str | None) -> None:
        record = self.store.create_job({}, owner=owner, dataset_id="d", name="n")
        assert record.status is JobStatus.QUEUED
        self.jobs[record.id] = JobModel(owner=owner)
        self.events[record.id] = [{"event": "status", "status": "queued", "attempt": 0}]
        self.order.append(record.id)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50))
    def cancel(self, index: int) -> None:
        job_id, job = self._pick(index)
        outcome = self.attempts.cancel(job_id, finished_at="t")
        if job.status in (JobStatus.QUEUED, JobStatus.STALLED):
            assert outcome == "canceled"
            job.fence += 1
            self._moved(job_id, job, JobStatus.CANCELED)
        elif job.status is JobStatus.RUNNING:
            assert outcome == "stopping"
        else:
            assert outcome == job.status.value

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50))
    def reaper_stall(self, index: int) -> None:
        job_id, job = self._pick(index)
        applied = self.attempts.transition(
            job_id, allowed=(JobStatus.RUNNING,), fields={"status": JobStatus.STALLED}
        )
        assert applied == (job.status is JobStatus.RUNNING)
        if applied:
            self._moved(job_id, job, JobStatus.STALLED)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50), retries_left=st.booleans())
    def kill(self, index: int, retries_left: bool) -> None:
        """The work-horse died (or the reaper found RQ gave up / re-queued): one shared function."""
        job_id, job = self._pick(index)
        outcome = self.attempts.requeue_or_fail(job_id, requeue=retries_left, reason="died")
        if job.status not in ALIVE:
            assert outcome is None
            return
        expected = JobStatus.QUEUED if retries_left else JobStatus.FAILED
        assert outcome is expected
        if not retries_left:
            job.fence += 1
        self._moved(job_id, job, expected)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50))
    def reaper_fail_queued(self, index: int) -> None:
        job_id, job = self._pick(index)
        applied = self.attempts.transition(
            job_id, allowed=(JobStatus.QUEUED,), fields={"status": JobStatus.FAILED, "error": "x"}, bump_fence=True
        )
        assert applied == (job.status is JobStatus.QUEUED)
        if applied:
            job.fence += 1
            self._moved(job_id, job, JobStatus.FAILED)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50))
    def delete(self, index: int) -> None:
        job_id, job = self._pick(index)
        if job.status in TERMINAL_STATUSES:
            assert self.store.delete_job(job_id)
            del self.jobs[job_id]
            self.order.remove(job_id)
        else:
            with pytest.raises(JobNotFinishedError):
                self.store.delete_job(job_id)

    # --- the worker's side ------------------------------------------------------------------------
    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50))
    def begin(self, index: int) -> None:
        job_id, job = self._pick(index)
        begin = self.attempts.begin(job_id, started_at="t", worker="w", heartbeat_interval=10)
        if job.status in TERMINAL_STATUSES:
            assert begin.token == 0
            return
        job.fence += 1
        job.attempts += 1
        assert begin.token == job.fence
        job.tokens.append(begin.token)
        if job.status is JobStatus.RUNNING:  # a new attempt of a running job is announced too
            expected = {"event": "status", "status": "running", "attempt": job.attempts}
            self.events.setdefault(job_id, []).append(expected)
        self._moved(job_id, job, JobStatus.RUNNING)

    def _write(self, index: int, choice: int, fields: dict[str, Any], status: JobStatus | None) -> None:
        job_id, job = self._pick(index)
        token = self._token(job, choice)
        ok = self._fenced_ok(job, token)
        before = self._stored(job_id)
        applied, _ = self.attempts.write(job_id, token, fields, [{"epoch": 1}])
        assert applied == ok
        if not ok:
            assert self._stored(job_id) == before, "a stale token wrote"
        elif status is not None:
            self._moved(job_id, job, status)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50), choice=st.integers(0, 5))
    def progress(self, index: int, choice: int) -> None:
        self._write(index, choice, {"progress": {"epoch": 1}}, None)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50), choice=st.integers(0, 5))
    def fail(self, index: int, choice: int) -> None:
        self._write(index, choice, {"status": JobStatus.FAILED, "error": "boom", "finished_at": "t"}, JobStatus.FAILED)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50), choice=st.integers(0, 5))
    def stop(self, index: int, choice: int) -> None:
        """The worker saw the stop flag at an epoch boundary."""
        self._write(index, choice, {"status": JobStatus.CANCELED, "finished_at": "t"}, JobStatus.CANCELED)

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50), choice=st.integers(0, 5))
    def checkpoint(self, index: int, choice: int) -> None:
        job_id, job = self._pick(index)
        token = self._token(job, choice)
        ok = self._fenced_ok(job, token)
        before = self._stored(job_id)
        applied, _ = self.attempts.set_checkpoint(job_id, token, path=f"p{token}", sha256="s", epoch=1)
        assert applied == ok
        if not ok:
            assert self._stored(job_id) == before, "a stale token wrote"

    @precondition(lambda self: self.order)
    @rule(index=st.integers(0, 50), choice=st.integers(0, 5))
    def commit(self, index: int, choice: int) -> None:
        job_id, job = self._pick(index)
        token = self._token(job, choice)
        ok = self._fenced_ok(job, token)
        before = self._stored(job_id)
        model_id = f"m-{next(self.sentinels)}"  # a fresh id per commit attempt
        version, _ = self.attempts.commit_model(
            job_id, token, model_id=model_id, name="n", owner=job.owner, meta={"id": model_id}, score=1.0,
            job_fields={"status": JobStatus.SUCCEEDED, "model_id": model_id, "finished_at": "t"},
        )  # fmt: skip
        assert (version > 0) == ok
        if ok:
            self._moved(job_id, job, JobStatus.SUCCEEDED)
        else:
            assert self._stored(job_id) == before, "a stale token wrote"
            assert not self.redis.exists(keys.model(model_id))

    # --- what must hold after every step ----------------------------------------------------------
    @invariant()
    def statuses_counters_and_indexes_agree(self) -> None:
        for job_id, job in self.jobs.items():
            record = self.store.get_job(job_id, with_history=False)
            assert record is not None and record.status == job.status.value
            if job.frozen is not None:
                assert self._stored(job_id) == job.frozen, "a terminal job changed"
        counts = self.store.job_counts()
        for status in JOB_STATUSES:
            ids = {job_id for job_id, job in self.jobs.items() if job.status is status}
            assert counts[status.value] == len(ids)
            assert {_decode(raw) for raw in self.redis.zrange(keys.jobs_with_status(status.value), 0, -1)} == ids
            for owner in ("alice", "bob"):
                mine = {job_id for job_id in ids if self.jobs[job_id].owner == owner}
                index = keys.jobs_with_status(status.value, owner)
                assert {_decode(raw) for raw in self.redis.zrange(index, 0, -1)} == mine
                listed, total = self.store.list_jobs(owner=owner, status=status.value, limit=1000)
                assert total == len(mine) and {record.id for record in listed} == mine
        running = {job_id for job_id, job in self.jobs.items() if job.status is JobStatus.RUNNING}
        active = {job_id for job_id, job in self.jobs.items() if job.status in ACTIVE_STATUSES}
        assert {_decode(raw) for raw in self.redis.smembers(keys.jobs_running())} == running  # type: ignore[union-attr]
        assert set(self.store.active_job_ids()) == active
        for key in OWNERS:
            queued = sum(1 for job in self.jobs.values() if job.owner == key and job.status is JobStatus.QUEUED)
            assert int(self.redis.hget(keys.job_counts(), keys.queued_of(key)) or 0) == queued
            runs = sum(1 for job in self.jobs.values() if job.owner == key and job.status is JobStatus.RUNNING)
            assert int(self.redis.hget(keys.job_counts(), keys.running_of(key)) or 0) == runs

    @invariant()
    def every_status_change_is_published_once(self) -> None:
        assert self._drain() == self.events
        self.events = {}


def test_job_state_machine_keeps_counters_indexes_and_fences(redis_conn: redis.Redis, blob_dir: Path) -> None:
    run_state_machine_as_test(
        lambda: JobStateMachine(redis_conn, blob_dir),  # type: ignore[arg-type]  # any factory works
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
