"""Per-owner storage quotas: counted with the records, checked and counted in one step, given back on delete."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis

from tests.worker.conftest import blobs_dataset
from tests.worker.test_store import _commit_model
from worker import Quota, QuotaExceededError, Store, keys


def _blob_files(blob_dir: Path) -> list[Path]:
    return sorted((blob_dir / "datasets").glob("*.npz")) if (blob_dir / "datasets").exists() else []


def test_usage_counts_datasets_and_models_per_owner(redis_conn: redis.Redis, store: Store) -> None:
    X, y = blobs_dataset()
    first = store.create_dataset(X, y, owner="alice")
    second = store.create_dataset(X[:60], y[:60], owner="alice")
    store.create_dataset(X, y, owner="bob")
    model_id, _ = _commit_model(redis_conn, store, "m", "alice")
    model = store.get_model(model_id)
    assert model is not None
    usage = store.usage("alice")
    assert (usage.datasets, usage.models) == (2, 1)
    assert usage.bytes == first.size_bytes + second.size_bytes + model.size_bytes
    assert store.usage("bob").datasets == 1 and store.usage("bob").models == 0
    assert store.usage(None).bytes == 0


def test_usage_given_back_once_on_delete(redis_conn: redis.Redis, store: Store) -> None:
    X, y = blobs_dataset()
    dataset = store.create_dataset(X, y, owner="alice")
    model_id, _ = _commit_model(redis_conn, store, "m", "alice")
    assert store.delete_dataset(dataset.id) is True
    assert store.delete_dataset(dataset.id) is False
    assert store.delete_model(model_id) is True
    assert store.delete_model(model_id) is False
    usage = store.usage("alice")
    assert (usage.bytes, usage.datasets, usage.models) == (0, 0, 0)


def test_usage_recounted_from_records_when_the_counters_are_missing(
    redis_conn: redis.Redis, store: Store
) -> None:
    X, y = blobs_dataset()
    dataset = store.create_dataset(X, y, owner=None)
    model_id, _ = _commit_model(redis_conn, store, "m", None)
    expected = store.usage(None)
    redis_conn.delete(keys.usage())  # a store written before the counters existed
    assert store.usage(None) == expected
    assert expected.bytes == dataset.size_bytes + len(f"weights of {model_id}".encode())
    # deletes before the recount give nothing back twice
    redis_conn.delete(keys.usage())
    assert store.delete_dataset(dataset.id) is True
    usage = store.usage(None)
    assert (usage.datasets, usage.models, usage.bytes) == (0, 1, expected.bytes - dataset.size_bytes)


def test_create_dataset_over_dataset_quota_stores_nothing(store: Store, blob_dir: Path) -> None:
    X, y = blobs_dataset()
    quota = Quota(max_datasets=2)
    kept = [store.create_dataset(X, y, owner="alice", quota=quota) for _ in range(2)]
    with pytest.raises(QuotaExceededError) as raised:
        store.create_dataset(X, y, owner="alice", quota=quota)
    assert (raised.value.resource, raised.value.value, raised.value.maximum) == ("datasets", 3, 2)
    assert store.list_datasets(owner="alice")[1] == 2
    assert len(_blob_files(blob_dir)) == 2
    assert all(store.load_dataset(record.id)[0].shape == X.shape for record in kept)
    store.create_dataset(X, y, owner="bob", quota=quota)  # the quota is per owner


def test_create_dataset_bytes_quota_holds_under_concurrent_uploads(store: Store, blob_dir: Path) -> None:
    X, y = blobs_dataset()
    size = store.create_dataset(X, y, owner="probe").size_bytes
    quota = Quota(max_bytes=3 * size)
    barrier = threading.Barrier(12)

    def upload(_: int) -> str:
        barrier.wait()
        try:
            store.create_dataset(X, y, owner="alice", quota=quota)
        except QuotaExceededError as exc:
            assert exc.resource == "bytes" and exc.maximum == 3 * size
            return "refused"
        return "stored"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(upload, range(12)))
    assert outcomes.count("stored") == 3
    assert store.list_datasets(owner="alice")[1] == 3
    assert store.usage("alice").bytes == 3 * size
    assert len(_blob_files(blob_dir)) == 4  # alice's three and the probe: refused uploads leave no blob


def test_create_dataset_over_bytes_quota_after_delete_fits_again(store: Store) -> None:
    X, y = blobs_dataset()
    quota = Quota(max_bytes=store.create_dataset(X, y, owner="probe").size_bytes)
    record = store.create_dataset(X, y, owner="alice", quota=quota)
    with pytest.raises(QuotaExceededError, match="bytes"):
        store.create_dataset(np.vstack([X, X]), np.concatenate([y, y]), owner="alice", quota=quota)
    store.delete_dataset(record.id)
    assert store.create_dataset(X, y, owner="alice", quota=quota).size_bytes == record.size_bytes


def test_model_commit_counts_past_the_quota(redis_conn: redis.Redis, store: Store) -> None:
    X, y = blobs_dataset()
    quota = Quota(max_bytes=1, max_models=1)
    store.usage("alice")  # counters built
    first, _ = _commit_model(redis_conn, store, "m", "alice")
    second, _ = _commit_model(redis_conn, store, "m", "alice")
    assert store.get_model(first) is not None and store.get_model(second) is not None
    assert store.usage("alice").models == 2
    with pytest.raises(QuotaExceededError):
        store.create_dataset(X, y, owner="alice", quota=quota)
