"""Verification jobs: a model retrained from its receipt on a real worker matches bit for bit, even when its
training was SIGKILLed mid-run and resumed from a checkpoint; environment differences are reported."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.worker.conftest import QUEUE, blobs_dataset, children, wait_for
from worker import Store, enqueue_training
from worker.receipts import environment, environment_differs
from worker.records import JobRecord

SPEC: dict[str, Any] = {
    "hidden_layers": [32],
    "epochs": 60,
    "batch_size": 8,
    "seed": 7,
    "validation_fraction": 0.1,
    "learning_rate": 0.05,
}


def _job(store: Store, job_id: str) -> JobRecord:
    record = store.get_job(job_id)
    assert record is not None
    return record


def _submit(redis_conn: redis.Redis, store: Store, job: JobRecord) -> str:
    enqueue_training(redis_conn, job, queue_name=QUEUE, timeout=300, retries=2)
    return job.id


@pytest.mark.slow
def test_verify_model_resumed_after_sigkill_matches(
    redis_conn: redis.Redis, store: Store, worker_process: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    dataset = store.create_dataset(*blobs_dataset(n=600), owner="alice")
    job_id = _submit(redis_conn, store, store.create_job(SPEC, owner="alice", dataset_id=dataset.id, name="blobs"))
    worker = worker_process("verify-kill-worker")
    wait_for(lambda: len(_job(store, job_id).history) >= 5, timeout=60, what="five epochs")
    (horse,) = children(worker.pid)
    os.kill(horse, signal.SIGKILL)
    wait_for(lambda: _job(store, job_id).status in ("succeeded", "failed"), timeout=120, what="the job to end")
    record = _job(store, job_id)
    assert record.status == "succeeded", record.error
    assert record.attempts == 2 and record.model_id is not None
    model = store.get_model(record.model_id)
    assert model is not None and model.receipt is not None
    resumed = [attempt["from_epoch"] for attempt in model.receipt["attempts"]]
    assert resumed[0] == 0 and len(resumed) == 2 and resumed[1] >= 1  # the second attempt resumed

    verify = store.create_job({"model_id": model.id}, owner="alice", dataset_id=dataset.id, name="blobs", kind="verify")
    _submit(redis_conn, store, verify)
    wait_for(lambda: _job(store, verify.id).status in ("succeeded", "failed"), timeout=120, what="verification")
    assert _job(store, verify.id).status == "succeeded", _job(store, verify.id).error
    (result,), _ = store.list_verifications(model.id)
    assert result["match"] is True, result
    assert result["weights_sha256"] == result["expected_sha256"] == model.receipt["weights_sha256"]
    assert result["environment_differs"] == []


def test_environment_differs_names_each_changed_field() -> None:
    current = environment()
    recorded = {**current, "numpy_version": "1.0.0", "blas_threads": 64}
    differences = environment_differs(recorded, current)
    assert [d["field"] for d in differences] == ["numpy_version", "blas_threads"]
    assert differences[0] == {"field": "numpy_version", "recorded": "1.0.0", "current": current["numpy_version"]}
    assert environment_differs(current, current) == []
