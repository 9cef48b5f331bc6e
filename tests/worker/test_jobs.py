"""Training jobs end to end on real RQ workers: success, failure reasons, cancel, crash and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

import engine
from tests.worker.conftest import QUEUE, blobs_dataset, children, wait_for
from worker import Store, cancel_job, enqueue_training, keys, queue_position, reap, workers_alive
from worker.attempts import Attempts
from worker.records import JobRecord
from worker.runner import build_worker
from worker.runtime import WorkerConfig

SPEC: dict[str, Any] = {
    "hidden_layers": [8],
    "epochs": 4,
    "batch_size": 16,
    "seed": 3,
    "validation_fraction": 0.2,
    "learning_rate": 0.05,
}


def _submit(
    redis_conn: redis.Redis, store: Store, spec: dict[str, Any], *, dataset_id: str, retries: int = 2
) -> str:
    job = store.create_job(spec, owner="alice", dataset_id=dataset_id, name="blobs")
    enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=120, retries=retries)
    return job.id


def _burst(redis_conn: redis.Redis) -> None:
    build_worker(redis_conn, queue_name=QUEUE, job_monitoring_interval=1).work(burst=True)


def _job(store: Store, job_id: str) -> JobRecord:
    record = store.get_job(job_id)
    assert record is not None
    return record


def test_run_training_succeeds_and_saves_a_versioned_model(
    redis_conn: redis.Redis, store: Store, runtime_config: WorkerConfig
) -> None:
    X, y = blobs_dataset()
    dataset = store.create_dataset(X, y, owner="alice")
    first = _submit(redis_conn, store, SPEC, dataset_id=dataset.id)
    second = _submit(redis_conn, store, SPEC, dataset_id=dataset.id)
    _burst(redis_conn)
    record = _job(store, first)
    assert record.status == "succeeded", record.error
    assert record.attempts == 1 and record.started_at and record.finished_at
    assert [entry["epoch"] for entry in record.history] == [1, 2, 3, 4]
    assert record.progress is not None and record.progress["epoch"] == 4 and record.progress["epochs"] == 4
    assert record.progress["eta_seconds"] == 0.0 and record.progress["samples_per_second"] > 0
    assert record.model_id is not None
    model_record = store.get_model(record.model_id)
    assert model_record is not None and model_record.version == 1 and model_record.name == "blobs"
    assert (
        model_record.owner == "alice"
        and model_record.job_id == first
        and model_record.dataset_id == dataset.id
    )
    assert model_record.classes == [0, 1, 2] and model_record.layer_sizes == [4, 8, 3]
    assert len(model_record.history) == 4
    model = engine.loads(store.load_model_bytes(record.model_id))
    assert model.score(X, y) > 0.9
    reference = engine.train(X, y, engine.TrainConfig.from_dict(SPEC)).model
    for (W, b), (W_ref, b_ref) in zip(model.params, reference.params, strict=True):
        np.testing.assert_array_equal(W, W_ref)
        np.testing.assert_array_equal(b, b_ref)
    again = _job(store, second)
    assert again.status == "succeeded" and again.model_id is not None
    latest = store.resolve_model("blobs")
    assert latest is not None and latest.id == again.model_id and latest.version == 2
    assert list((store.blobs.root / "checkpoints").glob("*")) == []  # checkpoints are dropped at the end


def test_run_training_divergence_fails_with_the_epoch(
    redis_conn: redis.Redis, store: Store, runtime_config: WorkerConfig
) -> None:
    X, y = blobs_dataset()
    dataset = store.create_dataset(X * 1e3, y, owner=None)
    spec = {**SPEC, "optimizer": "sgd", "learning_rate": 1e12, "standardize": False, "l2": 0.0}
    job_id = _submit(redis_conn, store, spec, dataset_id=dataset.id)
    _burst(redis_conn)
    record = _job(store, job_id)
    assert record.status == "failed" and record.model_id is None
    assert record.error is not None and "diverged at epoch" in record.error
    assert "Traceback" not in record.error
    assert store.list_models(owner=None)[1] == 0


def test_run_training_missing_dataset_and_bad_spec_fail_with_a_reason(
    redis_conn: redis.Redis, store: Store, runtime_config: WorkerConfig
) -> None:
    missing = _submit(redis_conn, store, SPEC, dataset_id="0" * 32)
    dataset = store.create_dataset(*blobs_dataset(), owner=None)
    bad = _submit(redis_conn, store, {**SPEC, "no_such_option": 1}, dataset_id=dataset.id)
    _burst(redis_conn)
    assert _job(store, missing).status == "failed"
    assert _job(store, missing).error == f"dataset {'0' * 32} not found (was it deleted?)"
    record = _job(store, bad)
    assert record.status == "failed" and record.error is not None
    assert record.error.startswith("invalid job:") and "no_such_option" in record.error
    assert record.attempts == 1  # a deterministic failure is not retried


def test_run_training_over_its_time_limit_fails_with_the_limit(
    redis_conn: redis.Redis, store: Store, runtime_config: WorkerConfig
) -> None:
    # Small epochs (15 steps): even on a loaded machine some finish within the 1 s limit.
    dataset = store.create_dataset(*blobs_dataset(n=120), owner=None)
    job = store.create_job(_slow_spec(100_000), owner=None, dataset_id=dataset.id, name="slow")
    enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=1, retries=2)
    _burst(redis_conn)
    record = _job(store, job.id)
    assert record.status == "failed" and record.error == "training exceeded its time limit of 1 s"
    assert record.attempts == 1 and len(record.history) >= 1


def test_cancel_queued_job_never_runs(
    redis_conn: redis.Redis, store: Store, runtime_config: WorkerConfig
) -> None:
    dataset = store.create_dataset(*blobs_dataset(), owner=None)
    canceled = _submit(redis_conn, store, SPEC, dataset_id=dataset.id)
    kept = _submit(redis_conn, store, SPEC, dataset_id=dataset.id)
    assert cancel_job(redis_conn, store, canceled, queue_name=QUEUE).status == "canceled"
    _burst(redis_conn)
    record = _job(store, canceled)
    assert record.status == "canceled" and record.attempts == 0 and record.started_at is None
    assert record.history == [] and record.model_id is None
    assert _job(store, kept).status == "succeeded"


def _slow_spec(epochs: int) -> dict[str, Any]:
    return {**SPEC, "hidden_layers": [32], "epochs": epochs, "batch_size": 8, "validation_fraction": 0.0}


def test_cancel_running_job_stops_at_an_epoch_boundary(
    redis_conn: redis.Redis, store: Store, worker_process: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    dataset = store.create_dataset(*blobs_dataset(n=600), owner=None)
    job_id = _submit(redis_conn, store, _slow_spec(5000), dataset_id=dataset.id)
    worker_process("cancel-worker")
    wait_for(lambda: len(_job(store, job_id).history) >= 2, timeout=30, what="two epochs")
    assert workers_alive(redis_conn, queue_name=QUEUE) == 1
    assert reap(redis_conn, store, queue_name=QUEUE) == 0
    assert _job(store, job_id).status == "running"  # a live worker's job is not stalled
    assert redis_conn.hget(keys.job(job_id), "worker") == b'"cancel-worker"'
    assert cancel_job(redis_conn, store, job_id, queue_name=QUEUE).status == "running"
    wait_for(lambda: _job(store, job_id).status == "canceled", timeout=30, what="the job to end canceled")
    record = _job(store, job_id)
    assert record.model_id is None and record.finished_at is not None
    assert 2 <= len(record.history) < 5000
    assert [entry["epoch"] for entry in record.history] == list(range(1, len(record.history) + 1))
    assert store.list_models(owner=None)[1] == 0


def _assert_same_weights(
    store: Store, record: JobRecord, X: np.ndarray, y: np.ndarray, spec: dict[str, Any], *, context: str = ""
) -> None:
    assert record.model_id is not None
    model = engine.loads(store.load_model_bytes(record.model_id))
    reference = engine.train(X, y, engine.TrainConfig.from_dict(spec))
    losses = [entry["train_loss"] for entry in record.history]
    reference_losses = [entry.train_loss for entry in reference.history]
    first_difference = next(
        (i + 1 for i, (a, b) in enumerate(zip(losses, reference_losses, strict=False)) if a != b), None
    )
    # On a mismatch, say where the run left the reference's trajectory (and how it resumed).
    message = f"first epoch whose train_loss differs: {first_difference}; {context}"
    for (W, b), (W_ref, b_ref) in zip(model.params, reference.model.params, strict=True):
        np.testing.assert_array_equal(W, W_ref, err_msg=message)
        np.testing.assert_array_equal(b, b_ref, err_msg=message)
    assert losses == reference_losses


def _stop(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM a subprocess worker and return its log (read while waiting: a full pipe cannot block it)."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    return stderr.decode(errors="replace")


def test_killed_work_horse_is_retried_and_resumes_bit_identical(
    redis_conn: redis.Redis, store: Store, worker_process: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    X, y = blobs_dataset(n=600)
    dataset = store.create_dataset(X, y, owner=None)
    spec = _slow_spec(60)
    job_id = _submit(redis_conn, store, spec, dataset_id=dataset.id)
    worker = worker_process("horse-kill-worker")
    wait_for(lambda: len(_job(store, job_id).history) >= 5, timeout=30, what="five epochs")
    (horse,) = children(worker.pid)
    os.kill(horse, signal.SIGKILL)
    wait_for(lambda: _job(store, job_id).status in ("succeeded", "failed"), timeout=60, what="the job to end")
    record = _job(store, job_id)
    assert record.status == "succeeded", record.error
    assert record.attempts == 2
    assert [entry["epoch"] for entry in record.history] == list(range(1, 61))
    log = _stop(worker)
    resumed = [line for line in log.splitlines() if "resuming" in line or "unusable" in line]
    _assert_same_weights(store, record, X, y, spec, context=" / ".join(resumed))
    assert f"job {job_id}: resuming from the checkpoint of epoch" in log
    assert "resuming from the checkpoint of epoch 0" not in log


def test_killed_work_horse_without_retries_fails_with_a_reason(
    redis_conn: redis.Redis, store: Store, worker_process: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    dataset = store.create_dataset(*blobs_dataset(n=600), owner=None)
    job_id = _submit(redis_conn, store, _slow_spec(5000), dataset_id=dataset.id, retries=0)
    worker = worker_process("no-retry-worker")
    wait_for(lambda: len(_job(store, job_id).history) >= 2, timeout=30, what="two epochs")
    (horse,) = children(worker.pid)
    os.kill(horse, signal.SIGKILL)
    wait_for(lambda: _job(store, job_id).status == "failed", timeout=30, what="the job to fail")
    assert _job(store, job_id).error == "the worker process died (signal 9) and no retries are left"
    assert worker.poll() is None  # the worker itself survives its work-horse


def test_killed_worker_is_reaped_and_resumes_bit_identical(
    redis_conn: redis.Redis,
    store: Store,
    runtime_config: WorkerConfig,
    worker_process: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    X, y = blobs_dataset(n=600)
    dataset = store.create_dataset(X, y, owner=None)
    spec = _slow_spec(60)
    job_id = _submit(redis_conn, store, spec, dataset_id=dataset.id)
    worker = worker_process("doomed-worker")
    wait_for(lambda: len(_job(store, job_id).history) >= 5, timeout=30, what="five epochs")
    (horse,) = children(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)  # the whole worker: parent first, then its orphaned work-horse
    os.kill(horse, signal.SIGKILL)
    worker.wait(timeout=10)
    assert _job(store, job_id).status == "running"
    # The worker's heartbeat (every 1 s) stops: a later reaper shows the job stalled ...
    assert reap(redis_conn, store, queue_name=QUEUE, now=time.time() + 10) == 0
    assert _job(store, job_id).status == "stalled"
    # ... and once RQ's started-registry entry expires (interval + 60 s), it is re-queued.
    assert reap(redis_conn, store, queue_name=QUEUE, now=time.time() + 120) == 1
    assert _job(store, job_id).status == "queued"
    checkpoint_epoch = int(redis_conn.hget(f"bp:job:{job_id}:checkpoint", "epoch") or 0)
    assert checkpoint_epoch >= 4  # history of epoch 5 was written, so epoch 4 was checkpointed
    _burst(redis_conn)
    record = _job(store, job_id)
    assert record.status == "succeeded", record.error
    assert record.attempts == 2
    assert [entry["epoch"] for entry in record.history] == list(range(1, 61))
    _assert_same_weights(store, record, X, y, spec)


def test_abandoned_attempt_returning_does_not_fail_the_live_one(
    redis_conn: redis.Redis, store: Store, worker_process: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    X, y = blobs_dataset(n=600)
    dataset = store.create_dataset(X, y, owner=None)
    spec = _slow_spec(80)
    job_id = _submit(redis_conn, store, spec, dataset_id=dataset.id)
    first = worker_process("paused-worker")
    wait_for(lambda: len(_job(store, job_id).history) >= 5, timeout=30, what="five epochs on the first worker")
    (first_horse,) = children(first.pid)
    for pid in (first.pid, first_horse):
        os.kill(pid, signal.SIGSTOP)
    second = worker_process("second-worker")
    # past the first worker's heartbeat TTL, RQ re-queues the job and the second worker takes it
    reap(redis_conn, store, queue_name=QUEUE, now=time.time() + 120)
    wait_for(
        lambda: _job(store, job_id).attempts == 2 and len(_job(store, job_id).history) >= 3,
        timeout=30,
        what="the second attempt to make progress",
    )
    (second_horse,) = children(second.pid)
    os.kill(second_horse, signal.SIGSTOP)  # keep the live attempt mid-job while the abandoned one returns
    try:
        for pid in (first_horse, first.pid):
            os.kill(pid, signal.SIGCONT)
        rq_job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
        finished = (RQStatus.FINISHED, RQStatus.FAILED)
        wait_for(lambda: rq_job.get_status() in finished, timeout=30, what="the abandoned attempt to return")
        reap(redis_conn, store, queue_name=QUEUE)
        assert _job(store, job_id).status == "running", _job(store, job_id).error
    finally:
        os.kill(second_horse, signal.SIGCONT)
    wait_for(lambda: _job(store, job_id).status in ("succeeded", "failed"), timeout=60, what="the job to end")
    record = _job(store, job_id)
    assert record.status == "succeeded", record.error
    assert record.attempts == 2
    _assert_same_weights(store, record, X, y, spec)


def test_running_limit_per_key_holds_back_an_owners_jobs_and_runs_others_first(
    redis_conn: redis.Redis, store: Store, worker_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    dataset = store.create_dataset(*blobs_dataset(), owner=None)
    attempts = Attempts(redis_conn)
    busy = store.create_job(SPEC, owner="alice", dataset_id=dataset.id, name="busy")  # runs elsewhere
    token = attempts.begin(busy.id, started_at="t", worker="elsewhere", heartbeat_interval=10).token
    submitted = {}
    for owner in ("alice", "bob"):  # alice's job is first in the queue
        job = store.create_job(SPEC, owner=owner, dataset_id=dataset.id, name=owner)
        enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=120, retries=0)
        submitted[owner] = job.id
    worker_process("limited-worker", running_limit=1)
    wait_for(lambda: _job(store, submitted["bob"]).status == "succeeded", timeout=30, what="bob's job")
    assert _job(store, submitted["alice"]).status == "queued"
    assert queue_position(redis_conn, submitted["alice"], queue_name=QUEUE) is not None
    assert attempts.write(busy.id, token, {"status": "canceled", "finished_at": "t"})[0]  # alice's slot frees
    wait_for(lambda: _job(store, submitted["alice"]).status == "succeeded", timeout=30, what="alice's job")
