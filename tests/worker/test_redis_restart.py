"""Redis going away mid-job: nothing finished is lost and the job resumes from its checkpoint, never stuck."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import redis

import engine
from backprop.embedded_redis import RedisServer
from tests.worker.conftest import QUEUE, blobs_dataset, children, wait_for, worker_command
from worker import Store, enqueue_training, keys, reap
from worker.runner import build_worker
from worker.runtime import WorkerConfig


def test_redis_restart_mid_job_resumes_from_checkpoint(
    tmp_path: Path, blob_dir: Path, runtime_config: WorkerConfig
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    conn = redis.Redis.from_url(server.url)
    worker: subprocess.Popen[bytes] | None = None
    try:
        store = Store(conn, blob_dir)
        X, y = blobs_dataset(n=600)
        dataset = store.create_dataset(X, y, owner=None)
        spec = {"hidden_layers": [32], "epochs": 60, "batch_size": 8, "seed": 5, "validation_fraction": 0.0}
        job = store.create_job(spec, owner=None, dataset_id=dataset.id, name="survivor")
        enqueue_training(conn, job, queue_name=QUEUE, timeout=120, retries=2)
        worker = subprocess.Popen(
            worker_command(server.url, blob_dir, name="restart-worker"), stderr=subprocess.DEVNULL
        )

        def epochs_done() -> int:
            record = store.get_job(job.id)
            return 0 if record is None else len(record.history)

        wait_for(lambda: epochs_done() >= 5, timeout=30, what="five epochs")
        server.stop()  # SIGTERM: Redis flushes its AOF and exits under the running job
        # The work-horse's next write fails; the worker loses Redis and exits (a supervisor restarts it).
        try:
            worker.wait(timeout=30)
        finally:
            for child in children(worker.pid) if worker.poll() is None else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        server = RedisServer(tmp_path / "redis", port=server.port)
        server.start()
        record = store.get_job(job.id)
        assert record is not None and store.get_dataset(dataset.id) is not None  # nothing accepted was lost
        assert record.status in ("running", "queued")
        deadline = time.time() + 600
        reap(conn, store, queue_name=QUEUE, now=deadline)  # the registry entry expires; RQ re-queues the job
        record = store.get_job(job.id)
        assert record is not None and record.status == "queued"
        assert int(conn.hget(keys.job_checkpoint(job.id), "epoch") or 0) >= 4  # it resumes, not from epoch 0
        build_worker(conn, queue_name=QUEUE, job_monitoring_interval=1).work(burst=True)
        record = store.get_job(job.id)
        assert record is not None
        assert record.status == "succeeded", record.error
        assert [entry["epoch"] for entry in record.history] == list(range(1, 61))
        assert record.model_id is not None
        model = engine.loads(store.load_model_bytes(record.model_id))
        reference = engine.train(X, y, engine.TrainConfig.from_dict(spec)).model
        for (W, b), (W_ref, b_ref) in zip(model.params, reference.params, strict=True):
            np.testing.assert_array_equal(W, W_ref)
            np.testing.assert_array_equal(b, b_ref)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        conn.close()
        server.stop()
