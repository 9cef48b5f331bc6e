"""The worker runs Backprop's own job functions only, whatever a job hash planted in Redis names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from tests.worker.conftest import QUEUE
from worker.jobs import run_training
from worker.queue import JOB_FUNCTION
from worker.rqjob import ENTRY_POINTS
from worker.runner import build_worker
from worker.runtime import WorkerConfig


def record_call(job: Job, *args: Any) -> None:
    """A callback a forged job names: it leaves a file behind if it ever runs."""
    Path(job.meta["marker"]).write_text("called")


def _plant(redis_conn: redis.Redis, func: str, args: list[Any], **options: Any) -> Job:
    """Enqueue a job as anyone with access to Redis could: any function name, JSON arguments."""
    queue = Queue(QUEUE, connection=redis_conn, serializer=JSONSerializer)
    return queue.enqueue_call(func, args=args, **options)


def _burst(redis_conn: redis.Redis) -> None:
    build_worker(redis_conn, queue_name=QUEUE, job_monitoring_interval=1).work(burst=True)


def _assert_refused(redis_conn: redis.Redis, job: Job) -> None:
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert job.id in FailedJobRegistry(QUEUE, connection=redis_conn, serializer=JSONSerializer)
    latest = job.latest_result()
    assert latest is not None and latest.exc_string is not None
    assert "ForbiddenJobError" in latest.exc_string


def test_entry_points_include_the_function_the_api_enqueues() -> None:
    assert JOB_FUNCTION in ENTRY_POINTS
    assert f"{run_training.__module__}.{run_training.__qualname__}" in ENTRY_POINTS


@pytest.mark.parametrize(
    ("func", "make_args"),
    [
        ("os.system", lambda marker: [f"touch {marker}"]),
        ("subprocess.call", lambda marker: [["touch", str(marker)]]),
    ],
)
def test_worker_refuses_a_planted_job_outside_the_entry_points(
    redis_conn: redis.Redis, runtime_config: WorkerConfig, tmp_path: Path, func: str, make_args: Any
) -> None:
    marker = tmp_path / "pwned"
    job = _plant(redis_conn, func, make_args(marker), retry=None)
    _burst(redis_conn)
    assert not marker.exists(), f"the worker ran {func}"
    _assert_refused(redis_conn, job)


def test_worker_never_calls_callbacks_named_in_a_job_hash(
    redis_conn: redis.Redis, runtime_config: WorkerConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "called"
    hook = Callback(f"{__name__}.record_call")
    job = _plant(
        redis_conn,
        f"{run_training.__module__}.run_training",
        ["no-such-job"],
        meta={"marker": str(marker)},
        on_success=hook,
        on_failure=hook,
    )
    _burst(redis_conn)
    assert not marker.exists(), "the worker called a callback named in the job hash"
    _assert_refused(redis_conn, job)
