"""The RQ side of the API: enqueue, cancel, queue position, and the reaper of dead workers' jobs."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import utcparse
from rq.worker import Worker
from rq.worker_registration import clean_worker_registry

from worker import keys
from worker.attempts import Attempts
from worker.jobstate import JobStatus
from worker.records import JobRecord, decode_job_fields, encode_job_fields, utc_now
from worker.rqjob import EntryPointJob
from worker.store import NotFoundError, Store

logger = logging.getLogger(__name__)

JOB_FUNCTION = "worker.jobs.run_training"  # one of rqjob.ENTRY_POINTS

# Rough cost model of one training job: forward + backward is ~6 flops per parameter per sample,
# run at a (pessimistic) 2e8 flop/s, plus a per-sample overhead for batching and bookkeeping,
# and a safety factor of 4 on top. The ceiling comes from settings.
_FLOPS_PER_PARAMETER_SAMPLE = 6.0
_FLOPS_PER_SECOND = 2e8
_SECONDS_PER_SAMPLE = 2e-5
_SECONDS_PER_STEP = 4e-5  # the fixed Python and NumPy cost of one mini-batch step (orders jobs, not timeouts)
_SAFETY = 4.0
_FAILED_TTL = 7 * 24 * 3600
_RESULT_TTL = 3600
# A job record whose RQ job does not exist this long after creation was never enqueued.
_ENQUEUE_GRACE_SECONDS = 60.0


def rq_queue(redis: Redis, queue_name: str) -> Queue:
    """The RQ queue of training jobs (JSON serializer); its registries' clean-ups see only EntryPointJobs."""
    return Queue(queue_name, connection=redis, serializer=JSONSerializer, job_class=EntryPointJob)


def estimated_seconds(n_samples: int, n_parameters: int, epochs: int, *, batch_size: int | None = None) -> float:
    """Rough seconds one training job of this size takes (the cost model above); with `batch_size`, each
    mini-batch step's fixed cost too, which sets small networks apart."""
    work = float(epochs) * float(n_samples)
    estimate = work * (n_parameters * _FLOPS_PER_PARAMETER_SAMPLE / _FLOPS_PER_SECOND + _SECONDS_PER_SAMPLE)
    if batch_size:
        estimate += epochs * math.ceil(n_samples / batch_size) * _SECONDS_PER_STEP
    return estimate


def job_timeout(n_samples: int, n_parameters: int, epochs: int, *, minimum: int, maximum: int) -> int:
    """Seconds RQ gives a job of this size, clamped to [minimum, maximum]."""
    estimate = estimated_seconds(n_samples, n_parameters, epochs)
    return int(min(max(math.ceil(_SAFETY * estimate), minimum), maximum))


def enqueue_training(redis: Redis, job: JobRecord, *, queue_name: str, timeout: int, retries: int) -> None:
    """Push the RQ job for `job` (args: only its id); a dead worker's job is re-run up to `retries` times."""
    queue = rq_queue(redis, queue_name)
    redis.hset(keys.job(job.id), mapping=encode_job_fields({"timeout": timeout}))  # type: ignore[arg-type]
    queue.enqueue_call(
        JOB_FUNCTION,
        args=(job.id,),
        job_id=job.id,
        timeout=timeout,
        result_ttl=_RESULT_TTL,
        failure_ttl=_FAILED_TTL,
        retry=Retry(max=retries, enqueue_at_front=True) if retries > 0 else None,
        description=f"training job {job.id}",
    )


def queue_position(redis: Redis, job_id: str, *, queue_name: str) -> int | None:
    """0-based position of the job in the queue, None when it is not waiting there."""
    position = redis.lpos(rq_queue(redis, queue_name).key, job_id)
    return None if position is None else int(position)  # type: ignore[arg-type]


def queue_depth(redis: Redis, *, queue_name: str) -> int:
    """Jobs waiting in the queue."""
    return int(redis.llen(rq_queue(redis, queue_name).key))


def _fetch(redis: Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def cancel_job(redis: Redis, store: Store, job_id: str, *, queue_name: str) -> JobRecord:
    """Queued (or stalled): removed from the queue and `canceled` now. Running: stop at the next epoch."""
    outcome = Attempts(redis).cancel(job_id, finished_at=utc_now())
    if outcome == "":
        raise NotFoundError(f"job {job_id} not found")
    if outcome == "canceled":
        rq_job = _fetch(redis, job_id)
        if rq_job is not None and rq_job.get_status() in (RQStatus.QUEUED, RQStatus.SCHEDULED):
            with contextlib.suppress(InvalidJobOperation):  # already canceled by another request
                rq_job.cancel()
        else:
            rq_queue(redis, queue_name).remove(job_id)
        logger.info("job %s canceled while %s", job_id, "queued or stalled")
    elif outcome == "stopping":
        logger.info("job %s: stop requested", job_id)
    record = store.get_job(job_id)
    if record is None:
        raise NotFoundError(f"job {job_id} not found")
    return record


def workers_alive(redis: Redis, *, queue_name: str) -> int:
    """Workers listening on the queue whose heartbeat has not expired."""
    return len(Worker.all(queue=rq_queue(redis, queue_name)))


def _worker_heartbeat_age(redis: Redis, worker_name: str, now: float) -> float | None:
    """Seconds since the worker's last heartbeat; None when its key has expired."""
    raw = redis.hget(Worker.redis_worker_namespace_prefix + worker_name, "last_heartbeat")
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return now - utcparse(text).timestamp()


def _worker_alive(redis: Redis, fields: dict[str, Any], now: float) -> bool:
    """Whether the worker of the job's current attempt still heart-beats."""
    if not fields["worker"]:
        return False
    interval = int(fields["heartbeat_interval"] or 10)
    age = _worker_heartbeat_age(redis, fields["worker"], now)
    return age is not None and age <= 2 * interval + 5


def _attempt_live(redis: Redis, job_id: str, fields: dict[str, Any], now: float) -> bool:
    """Whether the worker of the job's current attempt is alive and busy with this job."""
    if not _worker_alive(redis, fields, now):
        return False
    running = redis.smembers(WORKER_EXECUTIONS_KEY_TEMPLATE.format(fields["worker"]))
    texts = (raw.decode() if isinstance(raw, bytes) else str(raw) for raw in running)  # type: ignore[union-attr]
    return any(text.startswith(f"{job_id}:") for text in texts)  # members are "<job id>:<execution id>"


def _job_fields(redis: Redis, job_id: str) -> dict[str, Any]:
    names = ("status", "worker", "heartbeat_interval")
    return decode_job_fields(names, redis.hmget(keys.job(job_id), list(names)))


def reap(
    redis: Redis, store: Store, *, queue_name: str, now: float | None = None, job_retention_seconds: float = 0.0
) -> int:
    """Clean RQ's registries and reconcile our job records with RQ; returns jobs re-queued or failed.

    With `job_retention_seconds` > 0, finished jobs that ended longer ago than that are deleted too.

    A running job whose worker stopped heart-beating shows `stalled`; once RQ's StartedJobRegistry cleanup
    (after the worker's heartbeat TTL) re-queues it, it is `queued` again, and when no retries are left it
    ends `failed`. `now` (Unix seconds) lets tests and benchmarks look into the future.
    """
    moment = time.time() if now is None else now
    queue = rq_queue(redis, queue_name)
    if queue.acquire_maintenance_lock():
        try:
            StartedJobRegistry(queue=queue).cleanup(timestamp=moment)
            FinishedJobRegistry(queue=queue).cleanup()
            FailedJobRegistry(queue=queue).cleanup()
            clean_worker_registry(queue)
        finally:
            queue.release_maintenance_lock()  # type: ignore[no-untyped-call]
    attempts = Attempts(redis)
    changed = 0
    for job_id in store.active_job_ids():
        try:
            changed += _reconcile(redis, attempts, job_id, moment, queue_name=queue_name)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception:
            logger.exception("job %s: reaper could not reconcile the job", job_id)
    if job_retention_seconds > 0:
        cutoff = datetime.fromtimestamp(moment - job_retention_seconds, UTC)
        purged = store.purge_finished_jobs(finished_before=cutoff)
        if purged:
            logger.info("deleted %d finished job(s) older than the retention period", purged)
    return changed


def _reconcile(redis: Redis, attempts: Attempts, job_id: str, now: float, *, queue_name: str) -> int:
    fields = _job_fields(redis, job_id)
    status = fields["status"]
    rq_job = _fetch(redis, job_id)
    rq_status = rq_job.get_status() if rq_job is not None else None
    if status in (JobStatus.RUNNING, JobStatus.STALLED):
        if rq_status == RQStatus.QUEUED and queue_position(redis, job_id, queue_name=queue_name) is None:
            return 0  # a worker dequeued it and is starting it (admission marks it running first)
        return _reconcile_started(redis, attempts, job_id, fields, rq_status, now)
    if status == JobStatus.QUEUED:
        if rq_job is None:
            created = redis.zscore(keys.jobs(), job_id)
            if created is not None and now - float(created) > _ENQUEUE_GRACE_SECONDS:
                reason = "the job was never enqueued"
            else:
                return 0
        elif rq_status in (RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED):
            reason = "the worker could not run the job"
        else:
            return 0
        failed = {"status": JobStatus.FAILED, "error": reason, "finished_at": utc_now()}
        if attempts.transition(job_id, allowed=(JobStatus.QUEUED,), fields=failed, bump_fence=True):
            logger.error("job %s failed: %s", job_id, reason)
            return 1
    return 0


def _reconcile_started(
    redis: Redis, attempts: Attempts, job_id: str, fields: dict[str, Any], rq_status: RQStatus | None, now: float
) -> int:
    """A running or stalled job: stalled while its worker is silent, re-queued or failed once RQ gave up."""
    status = fields["status"]
    if rq_status == RQStatus.STARTED:
        dead = not _worker_alive(redis, fields, now)
        if dead and status == JobStatus.RUNNING:
            stalled = {"status": JobStatus.STALLED}
            if attempts.transition(job_id, allowed=(JobStatus.RUNNING,), fields=stalled):
                logger.warning("job %s: worker %s stopped heart-beating", job_id, fields["worker"])
        elif not dead and status == JobStatus.STALLED:
            attempts.transition(job_id, allowed=(JobStatus.STALLED,), fields={"status": JobStatus.RUNNING})
        return 0
    requeue = rq_status in (RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.DEFERRED)
    if not requeue and _attempt_live(redis, job_id, fields, now):
        # RQ's status is shared by every attempt of the job: an abandoned attempt that returned marks it
        # finished (or failed) while the current attempt, named in our record, still runs it
        return 0
    reason = (
        "the worker running the job died and no retries are left"
        if rq_status in (RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED, None)
        else "the job ended without recording a result"
    )
    outcome = attempts.requeue_or_fail(job_id, requeue=requeue, reason=reason)
    if outcome is JobStatus.QUEUED:
        logger.warning("job %s: its worker died; re-queued to resume from its checkpoint", job_id)
    elif outcome is JobStatus.FAILED:
        logger.error("job %s failed: %s", job_id, reason)
    return 0 if outcome is None else 1
