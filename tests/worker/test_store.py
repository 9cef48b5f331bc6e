"""Store CRUD against a real Redis: datasets, jobs, models, blobs and their checksums."""

from __future__ import annotations

import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.worker.conftest import blobs_dataset
from worker import (
    JOB_STATUSES,
    AmbiguousModelNameError,
    BlobError,
    JobNotFinishedError,
    NotFoundError,
    QueueLimitError,
    Store,
    keys,
)
from worker.attempts import Attempts
from worker.store import new_id


def _queued(store: Store, owner: str | None) -> int:
    """Queued jobs of `owner` (None: everyone's), from the kept per-status index."""
    return store.list_jobs(owner=owner, status="queued", limit=0)[1]


def test_dataset_create_get_load_roundtrip(store: Store, blob_dir: Path) -> None:
    X, y = blobs_dataset()
    record = store.create_dataset(X, y, owner="alice", name="blobs")
    assert len(record.id) == 32 and record.n_samples == 120 and record.n_features == 4
    assert record.classes == {"0": 40, "1": 40, "2": 40}
    assert record.label_kind == "int"
    assert store.get_dataset(record.id) == record
    X2, y2 = store.load_dataset(record.id)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert (blob_dir / "datasets" / f"{record.id}.npz").is_file()
    assert json.loads(json.dumps(record.to_dict()))["sha256"] == record.sha256


def test_dataset_string_labels_kept_as_text(store: Store) -> None:
    X = np.arange(8.0).reshape(4, 2)
    record = store.create_dataset(X, np.array(["cat", "dog", "cat", "cat"], dtype=object), owner=None)
    assert record.label_kind == "str"
    assert record.classes == {"cat": 3, "dog": 1}
    _, y = store.load_dataset(record.id)
    assert y.dtype.kind == "U" and y.tolist() == ["cat", "dog", "cat", "cat"]


def test_dataset_create_rejects_bad_arrays(store: Store) -> None:
    with pytest.raises(ValueError, match="X"):
        store.create_dataset(np.array([[1.0, np.nan]]), np.array([0]), owner=None)
    with pytest.raises(ValueError, match="y"):
        store.create_dataset(np.ones((3, 2)), np.array([0, 1]), owner=None)


def test_dataset_checksum_mismatch_is_detected(store: Store, blob_dir: Path) -> None:
    record = store.create_dataset(*blobs_dataset(), owner=None)
    path = blob_dir / "datasets" / f"{record.id}.npz"
    content = bytearray(path.read_bytes())
    content[-10] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(BlobError, match="checksum"):
        store.load_dataset(record.id)


def test_dataset_list_newest_first_by_owner_with_paging(store: Store) -> None:
    ids = [
        store.create_dataset(*blobs_dataset(i), owner="alice" if i % 2 == 0 else "bob").id for i in range(5)
    ]
    everyone, total = store.list_datasets(owner=None)
    assert total == 5 and [r.id for r in everyone] == ids[::-1]
    alice, total = store.list_datasets(owner="alice", offset=1, limit=1)
    assert total == 3 and [r.id for r in alice] == [ids[2]]


def test_dataset_delete_removes_metadata_and_blob(store: Store, blob_dir: Path) -> None:
    record = store.create_dataset(*blobs_dataset(), owner="alice")
    assert store.delete_dataset(record.id) is True
    assert store.get_dataset(record.id) is None
    assert not (blob_dir / "datasets" / f"{record.id}.npz").exists()
    assert store.list_datasets(owner="alice") == ([], 0)
    assert store.delete_dataset(record.id) is False
    with pytest.raises(NotFoundError):
        store.load_dataset(record.id)


def test_job_create_get_list_filter_and_count_queued(store: Store) -> None:
    first = store.create_job({"epochs": 3}, owner="alice", dataset_id="d1", name="one")
    second = store.create_job({"epochs": 4}, owner="bob", dataset_id="d1", name="two")
    third = store.create_job({}, owner="alice", dataset_id="d2", name="three")
    store.set_job_fields(third.id, status="failed", error="boom")
    got = store.get_job(first.id)
    assert got is not None and got.status == "queued" and got.spec == {"epochs": 3} and got.history == []
    jobs, total = store.list_jobs(owner=None)
    assert total == 3 and [j.id for j in jobs] == [third.id, second.id, first.id]
    queued, total = store.list_jobs(owner="alice", status="queued")
    assert total == 1 and [j.id for j in queued] == [first.id]
    assert _queued(store, "alice") == 1
    assert _queued(store, None) == 2
    assert store.get_job("0" * 32) is None


_SCORES = itertools.count(1)  # creation-time scores of the models committed by _commit_model, increasing


def _commit_model(
    redis_conn: redis.Redis, store: Store, name: str, owner: str | None, metrics: dict[str, float] | None = None
) -> tuple[str, int]:
    """Create a model the way the worker does: a blob, then the fenced commit of a running job."""
    job = store.create_job({}, owner=owner, dataset_id="d", name=name)
    attempts = Attempts(redis_conn)
    token = attempts.begin(job.id, started_at="now", worker="w", heartbeat_interval=10).token
    model_id = new_id()  # ids have the store's shape; anything else names no record
    blob = f"models/{model_id}.npz"
    data = f"weights of {model_id}".encode()
    sha = store.blobs.write(blob, data)
    meta: dict[str, Any] = {
        "id": model_id, "name": name, "owner": owner, "dataset_id": "d", "job_id": job.id,
        "created_at": "t", "layer_sizes": [2, 3], "activation": "relu", "output": "softmax",
        "classes": [0, 1, 2], "n_features": 2, "n_parameters": 9, "metrics": metrics or {}, "history": [],
        "config": {}, "sha256": sha, "size_bytes": len(data), "blob": blob,
    }  # fmt: skip
    version, _ = attempts.commit_model(
        job.id, token, model_id=model_id, name=name, owner=owner, meta=meta, score=float(next(_SCORES)),
        job_fields={"status": "succeeded", "model_id": model_id},
    )  # fmt: skip
    return model_id, version


def test_model_versions_count_up_per_name_and_name_resolves_latest(
    redis_conn: redis.Redis, store: Store
) -> None:
    a1, v1 = _commit_model(redis_conn, store, "digits", "alice")
    a2, v2 = _commit_model(redis_conn, store, "digits", "alice")
    b1, w1 = _commit_model(redis_conn, store, "iris", "bob")
    assert (v1, v2, w1) == (1, 2, 1)
    latest = store.resolve_model("digits")
    assert latest is not None and latest.id == a2 and latest.version == 2
    by_id = store.resolve_model(a1)
    assert by_id is not None and by_id.version == 1
    assert store.resolve_model("nope") is None
    versions, total = store.list_models(owner=None, name="digits")
    assert total == 2 and [m.version for m in versions] == [2, 1]
    assert store.list_models(owner="bob")[1] == 1
    assert store.load_model_bytes(a1) == f"weights of {a1}".encode()
    # deleting the latest version: the name resolves to the previous one, versions are never reused
    assert store.delete_model(a2) is True
    resolved = store.resolve_model("digits")
    assert resolved is not None and resolved.id == a1
    assert not (store.blobs.root / "models" / f"{a2}.npz").exists()
    _, v3 = _commit_model(redis_conn, store, "digits", "alice")
    assert v3 == 3
    assert store.get_model(b1) is not None and redis_conn.ttl(keys.model(b1)) == -1  # models never expire


def test_store_job_fields_and_model_metrics_read_many_records_none_for_missing(
    redis_conn: redis.Redis, store: Store
) -> None:
    model_id, _ = _commit_model(redis_conn, store, "m", None, metrics={"validation_loss": 0.25})
    finished = store.get_model(model_id)
    queued = store.create_job({}, owner=None, dataset_id="d", name="q")
    assert finished is not None
    rows = store.job_fields([finished.job_id, queued.id, new_id()], ("model_id", "error"))
    assert rows == [
        {"status": "succeeded", "model_id": model_id, "error": None},
        {"status": "queued", "model_id": None, "error": None},
        None,
    ]
    assert store.model_metrics([model_id, new_id()]) == [{"validation_loss": 0.25}, None]


def test_model_bytes_checksum_verified(redis_conn: redis.Redis, store: Store) -> None:
    model_id, _ = _commit_model(redis_conn, store, "m", None)
    (store.blobs.root / "models" / f"{model_id}.npz").write_bytes(b"tampered")
    with pytest.raises(BlobError, match="checksum"):
        store.load_model_bytes(model_id)
    with pytest.raises(NotFoundError):
        store.load_model_bytes("0" * 32)


def test_all_keys_carry_the_prefix(redis_conn: redis.Redis, store: Store) -> None:
    store.create_dataset(*blobs_dataset(), owner="alice")
    store.create_job({}, owner="alice", dataset_id="d", name="j")
    _commit_model(redis_conn, store, "m", "alice")
    names = [key.decode() if isinstance(key, bytes) else key for key in redis_conn.keys("*")]
    assert names and all(name.startswith("bp:") for name in names)


def test_model_versions_count_per_owner_and_name(redis_conn: redis.Redis, store: Store) -> None:
    alice_1, va1 = _commit_model(redis_conn, store, "clf", "alice")
    bob_1, vb1 = _commit_model(redis_conn, store, "clf", "bob")
    alice_2, va2 = _commit_model(redis_conn, store, "clf", "alice")
    anonymous_1, vn1 = _commit_model(redis_conn, store, "clf", None)
    assert (va1, vb1, va2, vn1) == (1, 1, 2, 1)  # another owner's "clf" never bumps (or reveals) yours
    bob = store.resolve_model("clf", owner="bob")
    assert bob is not None and (bob.id, bob.version) == (bob_1, 1)
    alice = store.resolve_model("clf", owner="alice")
    assert alice is not None and (alice.id, alice.version) == (alice_2, 2)
    assert store.resolve_model("clf", owner="carol") is None
    assert store.resolve_model_id(bob_1, owner="alice") == bob_1  # by id: visibility is the caller's check
    versions, total = store.list_models(owner="alice", name="clf")
    assert total == 2 and [m.id for m in versions] == [alice_2, alice_1]
    assert store.list_models(owner="bob", name="clf")[1] == 1
    everyone, total = store.list_models(owner=None, name="clf", limit=2)
    assert total == 4 and [m.id for m in everyone] == [anonymous_1, alice_2]
    # everyone's view (admins): a name several owners use is ambiguous; with one owner left it resolves
    with pytest.raises(AmbiguousModelNameError, match="3 owners"):
        store.resolve_model("clf")
    for model_id in (bob_1, anonymous_1):
        assert store.delete_model(model_id) is True
    latest = store.resolve_model("clf")
    assert latest is not None and latest.id == alice_2
    assert store.list_models(owner=None, name="clf")[1] == 2
    _, vb2 = _commit_model(redis_conn, store, "clf", "bob")
    assert vb2 == 2  # versions are never reused, per lineage


def _brute_counts(store: Store) -> tuple[dict[str, int], int]:
    jobs, _ = store.list_jobs(owner=None, limit=1000)
    counts = {status.value: 0 for status in JOB_STATUSES}
    for job in jobs:
        counts[job.status.value] += 1
    return counts, sum(store.job_history(job.id, 0, 1)[1] for job in jobs)  # lists carry no histories


def test_job_counts_and_epochs_follow_every_transition(redis_conn: redis.Redis, store: Store) -> None:
    attempts = Attempts(redis_conn)
    assert store.job_counts() == dict.fromkeys(JOB_STATUSES, 0) and store.epochs_trained() == 0
    jobs = [store.create_job({}, owner="alice", dataset_id="d", name=f"j{i}") for i in range(6)]
    tokens = {job.id: attempts.begin(job.id, started_at="t", worker="w", heartbeat_interval=10).token
              for job in jobs[:4]}  # fmt: skip
    first, second, third, fourth, fifth, sixth = (job.id for job in jobs)
    attempts.write(first, tokens[first], {"progress": {"samples_per_second": 100.0}}, [{"epoch": 1}, {"epoch": 2}])
    attempts.write(second, tokens[second], {"progress": {"samples_per_second": 50.5}}, [{"epoch": 1}])
    assert store.running_progress() == {
        first: {"samples_per_second": 100.0}, second: {"samples_per_second": 50.5}, third: {}, fourth: {},
    }  # fmt: skip
    attempts.write(first, tokens[first], {}, [{"epoch": 2}], trim_history=1)  # resumed: 2 entries, not 3
    attempts.write(second, tokens[second], {"status": "failed", "error": "x"})
    assert attempts.transition(third, allowed=("running",), fields={"status": "stalled"})
    assert attempts.cancel(fourth, finished_at="t") == "stopping"  # running: only a stop flag
    assert attempts.cancel(fifth, finished_at="t") == "canceled"
    store.set_job_fields(sixth, status="failed", error="could not be queued")
    _commit_model(redis_conn, store, "m", "alice")  # one more job: created, begun, succeeded
    counts, epochs = _brute_counts(store)
    assert counts == {"queued": 0, "running": 2, "succeeded": 1, "failed": 2, "canceled": 1, "stalled": 1}
    assert store.job_counts() == counts and store.epochs_trained() == epochs == 3
    assert set(store.running_progress()) == {first, fourth}
    # the counts are kept, not scanned: the job index is not read once the counters exist
    redis_conn.delete(keys.jobs())
    assert store.job_counts() == counts


def test_job_counts_are_recounted_once_when_missing(redis_conn: redis.Redis, store: Store) -> None:
    attempts = Attempts(redis_conn)
    jobs = [store.create_job({}, owner=None, dataset_id="d", name=f"j{i}") for i in range(3)]
    token = attempts.begin(jobs[0].id, started_at="t", worker="w", heartbeat_interval=10).token
    attempts.write(jobs[0].id, token, {"progress": {"epoch": 1}}, [{"epoch": 1}])
    redis_conn.delete(keys.job_counts(), keys.jobs_running())  # a store written before the counters existed
    store.create_job({}, owner=None, dataset_id="d", name="after")  # increments a counter not yet recounted
    expected = dict.fromkeys(JOB_STATUSES, 0) | {"queued": 3, "running": 1}
    assert store.job_counts() == expected and store.epochs_trained() == 1
    assert set(store.running_progress()) == {jobs[0].id}


def _brute_queued(store: Store, owner: str | None) -> int:
    jobs, _ = store.list_jobs(owner=owner, limit=500)
    return sum(job.status == "queued" for job in jobs)


def test_queued_counts_and_active_ids_follow_every_transition(redis_conn: redis.Redis, store: Store) -> None:
    attempts = Attempts(redis_conn)
    a0, a1, a2, a3 = (store.create_job({}, owner="alice", dataset_id="d", name=f"a{i}").id for i in range(4))
    bob = store.create_job({}, owner="bob", dataset_id="d", name="b").id
    anonymous = store.create_job({}, owner=None, dataset_id="d", name="n").id
    assert (_queued(store, "alice"), _queued(store, "bob"), _queued(store, None)) == (
        4, 1, 6,
    )  # fmt: skip
    assert store.active_job_ids() == sorted([a0, a1, a2, a3, bob, anonymous])
    attempts.begin(a0, started_at="t", worker="w", heartbeat_interval=10)  # queued -> running
    assert _queued(store, "alice") == 3 and _queued(store, None) == 5
    assert attempts.transition(a0, allowed=("running",), fields={"status": "stalled"})
    assert attempts.transition(a0, allowed=("stalled",), fields={"status": "queued"})  # the reaper's requeue
    assert _queued(store, "alice") == 4 and a0 in store.active_job_ids()
    token = attempts.begin(a0, started_at="t", worker="w", heartbeat_interval=10).token
    assert attempts.write(a0, token, {"status": "succeeded"})[0]
    token = attempts.begin(a1, started_at="t", worker="w", heartbeat_interval=10).token
    assert attempts.write(a1, token, {"status": "failed", "error": "x"})[0]
    assert attempts.cancel(a2, finished_at="t") == "canceled"
    store.set_job_fields(bob, status="failed", error="could not be queued")
    token = attempts.begin(anonymous, started_at="t", worker="w", heartbeat_interval=10).token
    for owner in ("alice", "bob", None):
        assert _queued(store, owner) == _brute_queued(store, owner)
    assert (_queued(store, "alice"), _queued(store, "bob"), _queued(store, None)) == (
        1, 0, 1,
    )  # fmt: skip
    assert store.active_job_ids() == sorted([a3, anonymous])
    # Kept, not scanned: a queued job record that only the job indexes name (as a scan would find it) is not
    # counted, and the reaper is not shown it.
    stray = "f" * 32
    redis_conn.hset(keys.job(stray), mapping={"status": '"queued"', "owner": '"alice"'})
    redis_conn.zadd(keys.jobs(), {stray: 1.0})
    redis_conn.zadd(keys.jobs_of("alice"), {stray: 1.0})
    assert _queued(store, "alice") == 1 and _queued(store, None) == 1
    assert store.active_job_ids() == sorted([a3, anonymous])


def test_queue_indexes_are_rebuilt_once_from_an_older_store(redis_conn: redis.Redis, store: Store) -> None:
    attempts = Attempts(redis_conn)
    jobs = [store.create_job({}, owner="alice", dataset_id="d", name=f"j{i}").id for i in range(3)]
    attempts.begin(jobs[0], started_at="t", worker="w", heartbeat_interval=10)
    attempts.cancel(jobs[1], finished_at="t")
    # A store written by the previous version: counters marked built, but no active set nor owner counters.
    redis_conn.delete(keys.jobs_active())
    redis_conn.hdel(keys.job_counts(), keys.queued_of("alice"))
    redis_conn.hset(keys.job_counts(), "built", 1)
    assert _queued(store, "alice") == 1
    assert store.active_job_ids() == sorted([jobs[0], jobs[2]])
    assert store.job_counts()["running"] == 1 and store.job_counts()["canceled"] == 1


def _finish(store: Store, job_id: str, status: str, finished_at: str) -> None:
    """End a job the way the API or reaper does (an unfinished job moved to a terminal status)."""
    store.set_job_fields(job_id, status=status, finished_at=finished_at)


def test_store_list_jobs_by_status_reads_only_its_index(redis_conn: redis.Redis, store: Store) -> None:
    jobs = [store.create_job({}, owner="alice", dataset_id="d", name=f"j{i}") for i in range(5)]
    _finish(store, jobs[1].id, "failed", "2020-01-01T00:00:00+00:00")
    _finish(store, jobs[3].id, "failed", "2020-01-01T00:00:00+00:00")
    # the per-owner and global job indexes are not what a status filter reads
    redis_conn.delete(keys.jobs(), keys.jobs_of("alice"))
    failed, total = store.list_jobs(owner="alice", status="failed")
    assert total == 2 and [job.id for job in failed] == [jobs[3].id, jobs[1].id]
    queued, total = store.list_jobs(owner=None, status="queued", offset=1, limit=1)
    assert total == 3 and [job.id for job in queued] == [jobs[2].id]
    assert store.list_jobs(owner="bob", status="failed") == ([], 0)


def test_store_delete_job_keeps_its_model_and_refuses_unfinished(redis_conn: redis.Redis, store: Store) -> None:
    model_id, _ = _commit_model(redis_conn, store, "m", "alice")
    record = store.get_model(model_id)
    assert record is not None
    queued = store.create_job({}, owner="alice", dataset_id="d", name="q")
    with pytest.raises(JobNotFinishedError, match="queued"):
        store.delete_job(queued.id)
    assert store.delete_job(record.job_id)
    assert store.get_job(record.job_id) is None and not store.delete_job(record.job_id)
    assert store.get_model(model_id) == record
    assert store.job_counts()["succeeded"] == 0 and store.list_jobs(owner="alice")[1] == 1
    assert not [key for key in redis_conn.keys(f"bp:job:{record.job_id}*")]


def test_store_purge_finished_jobs_deletes_only_those_finished_before(store: Store) -> None:
    old, recent, running = (store.create_job({}, owner=None, dataset_id="d", name=n) for n in "abc")
    _finish(store, old.id, "canceled", "2020-01-01T00:00:00+00:00")
    _finish(store, recent.id, "failed", "2030-01-01T00:00:00+00:00")
    cutoff = datetime(2025, 1, 1, tzinfo=UTC)
    assert store.purge_finished_jobs(finished_before=cutoff) == 0  # every job was created after the cutoff
    assert store.purge_finished_jobs(finished_before=datetime(2099, 1, 1, tzinfo=UTC)) == 2
    assert [job.id for job in store.list_jobs(owner=None)[0]] == [running.id]


def test_store_create_job_queue_limit_is_atomic(redis_url: str, store: Store) -> None:
    def submit(_: int) -> bool:
        connection = redis.Redis.from_url(redis_url)
        try:
            Store(connection, store.blobs.root).create_job({}, owner="alice", dataset_id="d", name="n", max_queued=1)
        except QueueLimitError:
            return False
        finally:
            connection.close()
        return True

    barrier = threading.Barrier(20)

    def at_once(index: int) -> bool:
        barrier.wait()
        return submit(index)

    with ThreadPoolExecutor(max_workers=20) as pool:
        accepted = list(pool.map(at_once, range(20)))
    assert sum(accepted) == 1
    assert _queued(store, "alice") == 1 and store.list_jobs(owner="alice")[1] == 1


def test_store_status_indexes_are_rebuilt_for_an_older_store(redis_conn: redis.Redis, store: Store) -> None:
    jobs = [store.create_job({}, owner=owner, dataset_id="d", name="n") for owner in ("alice", "bob", None)]
    store.set_job_fields(jobs[1].id, status="failed", error="x")
    stale = [keys.jobs_with_status(s.value, o) for s in JOB_STATUSES for o in ("alice", "bob", None)]
    redis_conn.delete(*stale)
    redis_conn.hset(keys.job_counts(), "built", "2")  # indexes of the previous version: no per-status sets
    assert [job.id for job in store.list_jobs(owner="bob", status="failed")[0]] == [jobs[1].id]
    assert store.list_jobs(owner=None, status="queued")[1] == 2
    assert _queued(store, "alice") == 1 and _queued(store, "bob") == 0
