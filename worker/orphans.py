"""The orphan sweep: blobs whose record is gone, and temp files of killed writes, deleted once they are old.

Blobs are written before their Redis record, and deleted after it: a crash or an outage in between leaves a
blob nobody points at. `sweep_orphans` deletes a blob only when it is older than `min_age_seconds` and the
Redis record it belongs to does not exist (a checkpoint also when it is not its job's current one). Names it
does not know are never touched. It runs only while the blob store's marker (`MARKER_BLOB`) and Redis'
(`keys.store_marker()`) agree, so a flushed or foreign Redis never makes every blob look like an orphan; any
failed lookup ends the sweep before another deletion.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from worker import keys
from worker.blobs import BlobError, BlobStore, BlobStoreUnavailableError, StorageFullError
from worker.checkpoints import checkpoint_paths, checkpoint_prefix
from worker.predictions import input_blob, result_blob
from worker.store import dataset_blob, is_id, model_blob, state_blob

logger = logging.getLogger(__name__)

MARKER_BLOB = "store.json"
"""The blob at the root of the store naming the store's id, which Redis keeps too (`keys.store_marker()`)."""
TEMP_FILES = "temp_files"
"""The kind under which deleted temp files and unfinished uploads are counted."""
_LOCK_SECONDS = 300
_RENEW_EVERY = 200  # blobs looked at between two renewals of the lock
_SLOT = "\0"


@dataclass(frozen=True)
class BlobKind:
    """Blobs named `name_of(id)` (with `prefix`, names beginning so), kept while Redis has `record_of(id)`;
    with `current`, only the blobs that `current(redis, id)` names are kept."""

    kind: str
    name_of: Callable[[str], str]
    record_of: Callable[[str], str]
    prefix: bool = False
    current: Callable[[Redis, str], Collection[str]] | None = None

    @property
    def folder(self) -> str:
        """How every name of this kind begins (what the store is listed by)."""
        return self.name_of(_SLOT).partition(_SLOT)[0]

    def record_id(self, name: str) -> str | None:
        """The id in `name` when `name_of` builds it (derived from the builder: no second naming rule)."""
        head, _, tail = self.name_of(_SLOT).partition(_SLOT)
        if not name.startswith(head):
            return None
        rest = name[len(head) :]
        candidate = rest.partition(tail)[0] if tail else rest
        if not is_id(candidate):
            return None
        built = self.name_of(candidate)
        matches = name.startswith(built) if self.prefix else name == built
        return candidate if matches else None

    def orphan_reason(self, redis: Redis, record_id: str, name: str) -> str | None:
        """Why blob `name` is an orphan, or None while its record holds it (RedisError propagates)."""
        record = self.record_of(record_id)
        if not redis.exists(record):
            return f"no record {record}"
        if self.current is not None and name not in self.current(redis, record_id):
            return f"not a current blob of {record}"
        return None


BLOB_KINDS = (
    BlobKind("datasets", dataset_blob, keys.dataset),
    BlobKind("models", model_blob, keys.model),
    BlobKind("states", state_blob, keys.job),
    BlobKind("checkpoints", checkpoint_prefix, keys.job, prefix=True, current=checkpoint_paths),
    BlobKind("predictions", result_blob, keys.prediction),
    BlobKind("prediction_inputs", input_blob, keys.prediction),
)
"""Every kind of blob Backprop writes, with the record that keeps it."""


@dataclass
class SweepReport:
    """What one sweep did: `outcome` is swept, busy (another process sweeps), refused (markers disagree)
    or aborted (a lookup failed); `deleted` counts by kind, `kept` the blobs looked at and left."""

    outcome: str = "swept"
    detail: str = ""
    deleted: dict[str, int] = field(default_factory=dict)
    kept: int = 0


class MarkerMismatchError(RuntimeError):
    """The blob store's marker is not the one Redis has: this Redis does not describe these blobs."""


def sweep_orphans(redis: Redis, blobs: BlobStore, *, min_age_seconds: float = 3600.0) -> SweepReport:
    """Delete orphan blobs and temp files older than `min_age_seconds` (one process at a time, by a lock)."""
    report = SweepReport()
    try:
        lock = redis.lock(keys.orphan_sweep_lock(), timeout=_LOCK_SECONDS)
        if not lock.acquire(blocking=False):
            return SweepReport(outcome="busy", detail="another process is sweeping")
    except RedisError as exc:
        return _aborted(report, exc)
    try:
        ensure_marker(redis, blobs)
        _sweep_blobs(redis, blobs, min_age_seconds, report, renew=lock.reacquire)
        for name in blobs.remove_temp_files(min_age_seconds):
            _deleted(redis, report, TEMP_FILES, name, f"temp file older than {min_age_seconds:g} s")
    except MarkerMismatchError as exc:
        logger.warning("orphan sweep refused: %s", exc)
        report.outcome, report.detail = "refused", str(exc)
    except (RedisError, BlobStoreUnavailableError, BlobError, StorageFullError, OSError) as exc:
        _aborted(report, exc)
    finally:
        try:
            lock.release()
        except RedisError:
            logger.debug("orphan sweep lock already gone")
    return report


def _aborted(report: SweepReport, exc: Exception) -> SweepReport:
    logger.warning("orphan sweep aborted, nothing more deleted: %s: %s", type(exc).__name__, exc)
    report.outcome, report.detail = "aborted", f"{type(exc).__name__}: {exc}"
    return report


def _sweep_blobs(
    redis: Redis, blobs: BlobStore, min_age_seconds: float, report: SweepReport, *, renew: Callable[[], object]
) -> None:
    folders: dict[str, list[BlobKind]] = {}
    for kind in BLOB_KINDS:
        folders.setdefault(kind.folder, []).append(kind)
    seen = 0
    for folder, kinds in folders.items():
        for blob in blobs.list(folder):
            seen += 1
            if seen % _RENEW_EVERY == 0:
                renew()  # LockNotOwnedError (a RedisError) when the lock was lost: the sweep ends
            found = _classify(blob.name, kinds)
            reason = None
            if found is not None and blob.age_seconds >= min_age_seconds:
                kind, record_id = found
                reason = kind.orphan_reason(redis, record_id, blob.name)
            if found is None or reason is None:
                report.kept += 1
                continue
            blobs.delete(blob.name)
            _deleted(redis, report, found[0].kind, blob.name, reason)


def _classify(name: str, kinds: list[BlobKind]) -> tuple[BlobKind, str] | None:
    for kind in kinds:
        record_id = kind.record_id(name)
        if record_id is not None:
            return kind, record_id
    return None


def _deleted(redis: Redis, report: SweepReport, kind: str, name: str, reason: str) -> None:
    logger.info("orphan sweep: deleted %s (%s)", name, reason)
    report.deleted[kind] = report.deleted.get(kind, 0) + 1
    redis.hincrby(keys.orphans_deleted(), kind, 1)


def ensure_marker(redis: Redis, blobs: BlobStore) -> str:
    """The store's id, the same in Redis and in the blob store: created in both when neither has one, written
    to the blob store when only Redis has it; MarkerMismatchError when the blob store has another (or Redis
    none: it was flushed, or is another deployment's)."""
    stored = _read_marker(blobs)
    raw = redis.get(keys.store_marker())
    expected = None if raw is None else _text(raw)
    if stored is not None:
        if stored != expected:
            where = "has none" if expected is None else f"has {expected}"
            raise MarkerMismatchError(
                f"the blob store {blobs.description} belongs to store {stored} but Redis ({keys.store_marker()}) "
                f"{where}: records may be missing, so no blob is deleted (if this Redis is the right one, "
                f"delete {MARKER_BLOB} from the blob store)"
            )
        return stored
    if expected is None:
        redis.set(keys.store_marker(), uuid.uuid4().hex, nx=True)
        raw = redis.get(keys.store_marker())
        if raw is None:
            raise RedisError(f"{keys.store_marker()} vanished while it was set")
        expected = _text(raw)
    blobs.write(MARKER_BLOB, json.dumps({"store_id": expected}).encode())
    return expected


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_marker(blobs: BlobStore) -> str | None:
    """The id in the blob store's marker, None without one; an unreadable marker is a mismatch."""
    try:
        content = b"".join(blobs.stream(MARKER_BLOB))
    except BlobError:
        return None
    try:
        store_id = json.loads(content)["store_id"]
    except (ValueError, TypeError, KeyError) as exc:
        raise MarkerMismatchError(f"{MARKER_BLOB} in {blobs.description} is unreadable ({exc})") from None
    return str(store_id)


def orphans_deleted(redis: Redis) -> dict[str, int]:
    """Orphan blobs and temp files the sweeps deleted, by kind (every kind present), since the store began."""
    counts = {kind.kind: 0 for kind in BLOB_KINDS} | {TEMP_FILES: 0}
    for name, value in redis.hgetall(keys.orphans_deleted()).items():  # type: ignore[union-attr]
        if _text(name) in counts:
            counts[_text(name)] = int(value)
    return counts
