"""The API sweeps orphan blobs and stale temp files shortly after it starts, and counts them in /metrics."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import numpy as np
import redis

from service.main import FIRST_ORPHAN_SWEEP_DELAY
from service.settings import Settings
from tests.live import api_server, wait_until
from worker import Store, keys
from worker.store import dataset_blob, new_id

TWO_HOURS_AGO = time.time() - 2 * 3600


def _age(path: Path) -> None:
    os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))


def test_api_startup_sweeps_old_orphans_and_temp_files_and_keeps_recorded_blobs(
    redis_conn: redis.Redis, redis_url: str, data_dir: Path
) -> None:
    store = Store(redis_conn, data_dir / "blobs")
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    dataset = store.create_dataset(X, y, owner=None)
    recorded = data_dir / "blobs" / dataset_blob(dataset.id)
    orphan = data_dir / "blobs" / dataset_blob(new_id())  # written, then Redis failed before the record
    orphan.write_bytes(b"orphan")
    temp = data_dir / "blobs" / "datasets" / ".tmp-killed"  # a write killed half-way
    temp.write_bytes(b"half")
    fresh = data_dir / "blobs" / "models" / f"{new_id()}.npz"  # a model whose record is on its way
    fresh.parent.mkdir()
    fresh.write_bytes(b"being committed")
    for path in (recorded, orphan, temp):
        _age(path)

    with api_server(Settings(redis_url=redis_url, data_dir=data_dir)) as server:
        wait_until(lambda: not orphan.exists() and not temp.exists(), timeout=60, what="the start-up sweep")
        metrics = httpx.get(f"{server.url}/metrics").text

    assert recorded.exists() and fresh.exists()
    X_read, y_read = store.load_dataset(dataset.id)  # still whole: checked against its sha256
    assert np.array_equal(X_read, X) and np.array_equal(y_read, y)
    deleted = dict(re.findall(r'^backprop_orphan_blobs_deleted_total\{kind="(\w+)"\} (\S+)$', metrics, re.MULTILINE))
    assert float(deleted["datasets"]) == 1 and float(deleted["temp_files"]) == 1 and float(deleted["models"]) == 0


def test_api_orphan_sweep_interval_zero_disables_the_sweep(
    redis_conn: redis.Redis, redis_url: str, data_dir: Path
) -> None:
    orphan = data_dir / "blobs" / dataset_blob(new_id())
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan")
    _age(orphan)
    settings = Settings(redis_url=redis_url, data_dir=data_dir, orphan_sweep_interval=0, orphan_min_age=0)

    with api_server(settings) as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        time.sleep(2 * FIRST_ORPHAN_SWEEP_DELAY)

    assert orphan.exists() and not redis_conn.exists(keys.store_marker())
