"""The orphan sweep on both blob backends: blobs whose record is gone and stale temp files go, every blob a
record names stays readable, and a Redis that does not describe the blob store deletes nothing."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from backprop.embedded_redis import free_port
from tests.s3server import S3Server
from tests.worker.conftest import blobs_dataset
from worker import keys
from worker.attempts import Attempts
from worker.blobs import BlobStore, LocalBlobStore, open_blob_store
from worker.checkpoints import checkpoint_blob, checkpoint_paths, load_checkpoint, save_checkpoint
from worker.orphans import MARKER_BLOB, TEMP_FILES, orphans_deleted, sweep_orphans
from worker.predictions import Predictions, input_blob, open_input, result_blob
from worker.s3blobs import SPOOL_PREFIX, S3BlobStore
from worker.store import Store, dataset_blob, model_blob, new_id, state_blob

HOURS_2 = 2 * 3600.0


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BlobStore:
    """An empty store of each backend; the system temp directory (where S3 spools) is this test's own, so a
    sweep never sees another process' spool files."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    if request.param == "local":
        store: BlobStore = LocalBlobStore(tmp_path / "blobs")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = open_blob_store(server.config(server.new_location()))
    store.check(create=True)
    return store


def _names(blobs: BlobStore) -> set[str]:
    return {info.name for prefix in ("datasets/", "models/", "states/", "checkpoints/", "predictions/", "misc/")
            for info in blobs.list(prefix)}  # fmt: skip


@dataclass
class Live:
    """Records with their blobs, made the way the API and the workers make them."""

    dataset_id: str
    job_id: str  # running, with a checkpoint
    model_id: str
    finished_job_id: str  # made the model; kept its final state
    state_sha256: str
    prediction_id: str

    def blobs(self, redis_conn: redis.Redis) -> set[str]:
        current = checkpoint_paths(redis_conn, self.job_id)
        assert len(current) == 2  # the checkpoint and the one before
        return {
            dataset_blob(self.dataset_id),
            model_blob(self.model_id),
            state_blob(self.finished_job_id),
            *current,
            input_blob(self.prediction_id),
        }

    def check_readable(self, store: Store, redis_conn: redis.Redis) -> None:
        X, y = store.load_dataset(self.dataset_id)
        assert X.shape == (120, 4) and y.shape == (120,)
        assert store.load_model_bytes(self.model_id) == b"weights"
        assert store.blobs.read(state_blob(self.finished_job_id), self.state_sha256) == b"final state"
        assert load_checkpoint(redis_conn, store.blobs, self.job_id) == (2, b"state of epoch 2")
        record = Predictions(redis_conn, store.blobs).get(self.prediction_id)
        assert record is not None
        with open_input(store.blobs, record) as archive:
            assert "X.npy" in archive.namelist()


def _make_live(store: Store, redis_conn: redis.Redis) -> Live:
    dataset = store.create_dataset(*blobs_dataset(), owner=None)
    attempts = Attempts(redis_conn)
    running = store.create_job({}, owner=None, dataset_id=dataset.id, name="running")
    token = attempts.begin(running.id, started_at="t", worker="w", heartbeat_interval=10).token
    for epoch in (1, 2):
        state = f"state of epoch {epoch}".encode()
        assert save_checkpoint(attempts, store.blobs, running.id, token, epoch=epoch, state=state)
    finished = store.create_job({}, owner=None, dataset_id=dataset.id, name="m")
    token = attempts.begin(finished.id, started_at="t", worker="w", heartbeat_interval=10).token
    model_id = new_id()
    sha256 = store.blobs.write(model_blob(model_id), b"weights")
    state_sha256 = store.blobs.write(state_blob(finished.id), b"final state")
    meta: dict[str, Any] = {
        "id": model_id, "name": "m", "owner": None, "dataset_id": dataset.id, "job_id": finished.id,
        "created_at": "t", "layer_sizes": [4, 3], "activation": "relu", "output": "softmax",
        "classes": [0, 1, 2], "n_features": 4, "n_parameters": 15, "metrics": {}, "history": [],
        "config": {}, "sha256": sha256, "size_bytes": 7, "blob": model_blob(model_id),
    }  # fmt: skip
    version, _ = attempts.commit_model(
        finished.id, token, model_id=model_id, name="m", owner=None, meta=meta, score=1.0,
        job_fields={"status": "succeeded", "model_id": model_id},
    )  # fmt: skip
    assert version == 1
    model = store.get_model(model_id)
    prediction = Predictions(redis_conn, store.blobs).create(
        owner=None, model=model, n_rows=5, dataset_id=None, X=np.ones((5, 4)), sha256=None,
        feature_names=None, chunk_rows=5,
    )  # fmt: skip
    return Live(dataset.id, running.id, model_id, finished.id, state_sha256, prediction.id)


def _plant_orphans(blobs: BlobStore, live_job_id: str) -> set[str]:
    """One blob of every kind whose record does not exist, and an old checkpoint of the live job."""
    orphans = {
        dataset_blob(new_id()),
        model_blob(new_id()),
        state_blob(new_id()),
        checkpoint_blob(new_id(), 1, 3),
        checkpoint_blob(live_job_id, 0, 7),  # an earlier attempt's: not the job's current checkpoint
        result_blob(new_id()),
        input_blob(new_id()),
    }
    for name in orphans:
        blobs.write(name, b"orphan")
    return orphans


def _plant_temp_files(blobs: BlobStore, age: float) -> Path:
    """A temp file a killed write left, last touched `age` seconds ago."""
    if isinstance(blobs, LocalBlobStore):
        path = blobs.root / "datasets" / ".tmp-killed"
    else:
        path = Path(tempfile.gettempdir()) / f"{SPOOL_PREFIX}killed"
    path.write_bytes(b"half a blob")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_sweep_orphans_deletes_every_orphan_kind_and_keeps_recorded_blobs_readable(
    blob_store: BlobStore, redis_conn: redis.Redis
) -> None:
    store = Store(redis_conn, blob_store)
    live = _make_live(store, redis_conn)
    orphans = _plant_orphans(blob_store, live.job_id)
    unknown = {"datasets/notes.txt", "misc/anything.bin"}
    for name in unknown:
        blob_store.write(name, b"not ours")
    temp = _plant_temp_files(blob_store, HOURS_2)
    upload = None
    if isinstance(blob_store, S3BlobStore):  # a multipart upload a killed writer never completed
        key = blob_store.key(model_blob(new_id()))
        upload = blob_store.client.create_multipart_upload(Bucket=blob_store.bucket, Key=key)["UploadId"]
    assert live.blobs(redis_conn) | orphans | unknown <= _names(blob_store)

    report = sweep_orphans(redis_conn, blob_store, min_age_seconds=0)

    assert report.outcome == "swept", report.detail
    assert _names(blob_store) == live.blobs(redis_conn) | unknown
    live.check_readable(store, redis_conn)
    assert not temp.exists()
    expected = {"datasets": 1, "models": 1, "states": 1, "checkpoints": 2, "predictions": 1,
                "prediction_inputs": 1, TEMP_FILES: 1 + (upload is not None)}  # fmt: skip
    assert report.deleted == expected
    assert {kind: count for kind, count in orphans_deleted(redis_conn).items() if count} == expected
    if isinstance(blob_store, S3BlobStore):
        listed = blob_store.client.list_multipart_uploads(Bucket=blob_store.bucket, Prefix=blob_store.prefix)
        assert not listed.get("Uploads")


def test_sweep_orphans_keeps_fresh_orphans_and_deletes_old_temp_files(
    blob_store: BlobStore, redis_conn: redis.Redis
) -> None:
    store = Store(redis_conn, blob_store)
    live = _make_live(store, redis_conn)
    orphans = _plant_orphans(blob_store, live.job_id)
    old_temp = _plant_temp_files(blob_store, HOURS_2)
    fresh_temp = old_temp.with_name(old_temp.name + "-fresh")
    fresh_temp.write_bytes(b"being written")

    report = sweep_orphans(redis_conn, blob_store)  # the default minimum age: an hour

    assert report.outcome == "swept", report.detail
    assert _names(blob_store) == live.blobs(redis_conn) | orphans
    assert not old_temp.exists() and fresh_temp.exists()
    assert report.deleted == {TEMP_FILES: 1}


def test_sweep_orphans_keeps_the_current_checkpoint_of_a_live_job(
    blob_store: BlobStore, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    store = Store(redis_conn, blob_store)
    job = store.create_job({}, owner=None, dataset_id="d", name="long")
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
    assert save_checkpoint(attempts, blob_store, job.id, token, epoch=5, state=b"five")
    stale = checkpoint_blob(job.id, 0, 4)  # an earlier attempt's
    blob_store.write(stale, b"four")
    if isinstance(blob_store, LocalBlobStore):  # both older than the minimum age (an hour)
        then = time.time() - HOURS_2
        for name in (stale, checkpoint_blob(job.id, token, 5)):
            os.utime(blob_store.path(name), (then, then))
        min_age = 3600.0
    else:
        min_age = 0.0  # an object's age cannot be set back

    report = sweep_orphans(redis_conn, blob_store, min_age_seconds=min_age)

    assert report.deleted == {"checkpoints": 1}
    assert _names(blob_store) == {checkpoint_blob(job.id, token, 5)}
    assert load_checkpoint(redis_conn, blob_store, job.id) == (5, b"five")


def test_sweep_orphans_refuses_when_redis_lost_the_store_marker(
    blob_store: BlobStore, redis_conn: redis.Redis
) -> None:
    store = Store(redis_conn, blob_store)
    dataset = store.create_dataset(*blobs_dataset(), owner=None)
    assert sweep_orphans(redis_conn, blob_store, min_age_seconds=0).outcome == "swept"  # the markers are made
    assert MARKER_BLOB in {info.name for info in blob_store.list("")}
    temp = _plant_temp_files(blob_store, HOURS_2)
    redis_conn.flushall()  # every record gone: a wiped Redis, or another deployment's

    report = sweep_orphans(redis_conn, blob_store, min_age_seconds=0)

    assert report.outcome == "refused" and "delete store.json" in report.detail
    assert _names(blob_store) == {dataset_blob(dataset.id)} and temp.exists()
    assert not redis_conn.exists(keys.store_marker())  # nothing adopted the blob store either


def test_sweep_orphans_refuses_when_the_markers_differ(blob_store: BlobStore, redis_conn: redis.Redis) -> None:
    orphan = dataset_blob(new_id())
    blob_store.write(orphan, b"orphan")
    assert sweep_orphans(redis_conn, blob_store, min_age_seconds=3600).outcome == "swept"
    redis_conn.set(keys.store_marker(), "another-store")

    report = sweep_orphans(redis_conn, blob_store, min_age_seconds=0)

    assert report.outcome == "refused" and "another-store" in report.detail
    assert _names(blob_store) == {orphan}


def test_sweep_orphans_writes_the_marker_blob_when_only_redis_has_it(
    blob_store: BlobStore, redis_conn: redis.Redis
) -> None:
    redis_conn.set(keys.store_marker(), "abc123")
    orphan = model_blob(new_id())
    blob_store.write(orphan, b"orphan")

    report = sweep_orphans(redis_conn, blob_store, min_age_seconds=0)

    assert report.outcome == "swept" and report.deleted == {"models": 1}
    assert b"".join(blob_store.stream(MARKER_BLOB)) == b'{"store_id": "abc123"}'


def test_sweep_orphans_deletes_nothing_while_another_process_sweeps(
    blob_store: BlobStore, redis_conn: redis.Redis
) -> None:
    orphan = dataset_blob(new_id())
    blob_store.write(orphan, b"orphan")
    redis_conn.set(keys.orphan_sweep_lock(), "someone else", ex=60)

    report = sweep_orphans(redis_conn, blob_store, min_age_seconds=0)

    assert report.outcome == "busy" and _names(blob_store) == {orphan}


def test_sweep_orphans_aborts_without_deleting_when_redis_is_unreachable(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    orphan = dataset_blob(new_id())
    blobs.write(orphan, b"orphan")
    temp = _plant_temp_files(blobs, HOURS_2)
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.5)

    report = sweep_orphans(unreachable, blobs, min_age_seconds=0)

    assert report.outcome == "aborted" and "ConnectionError" in report.detail
    assert _names(blobs) == {orphan} and temp.exists()


def test_sweep_orphans_aborts_without_deleting_when_the_blob_store_is_unreachable(
    redis_conn: redis.Redis, s3_server: S3Server
) -> None:
    config = s3_server.config(s3_server.new_location(), timeout=0.5, attempts=1)
    unreachable = open_blob_store(dataclasses.replace(config, endpoint_url=f"http://127.0.0.1:{free_port()}"))

    report = sweep_orphans(redis_conn, unreachable, min_age_seconds=0)

    assert report.outcome == "aborted" and "unavailable" in report.detail
    assert not redis_conn.exists(keys.store_marker(), keys.orphans_deleted(), keys.orphan_sweep_lock())


def test_worker_start_removes_this_hosts_stale_spool_files(
    s3_server: S3Server, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import run_worker

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    stale, fresh = spool / f"{SPOOL_PREFIX}killed", spool / f"{SPOOL_PREFIX}writing"
    for path in (stale, fresh):
        path.write_bytes(b"part of a model")
    os.utime(stale, (time.time() - HOURS_2, time.time() - HOURS_2))
    run_worker(redis_url, queue_name=f"spool-{new_id()}", blobs=s3_server.config(s3_server.new_location()), burst=True)
    assert not stale.exists() and fresh.exists()
