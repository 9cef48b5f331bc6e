"""Datasets, jobs and models: metadata in Redis, arrays as .npz blobs in the blob store."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from redis import Redis

from engine.data import check_labels
from worker import keys
from worker.aliases import Aliases, split_ref, valid_ref
from worker.attempts import Attempts
from worker.blobs import BlobConfig, BlobError, BlobStore, BlobStoreUnavailableError, open_blob_store
from worker.checkpoints import drop_checkpoints
from worker.jobstate import ACTIVE_STATUSES, JOB_STATUSES, MOVE_LUA, TERMINAL_STATUSES, JobStatus
from worker.records import (
    JOB_KINDS,
    DatasetRecord,
    JobRecord,
    ModelRecord,
    decode_job,
    decode_job_fields,
    encode_job_fields,
    utc_now,
)
from worker.usage import USAGE_LUA, Quota, QuotaExceededError, Usage

# Recount keys.job_counts (with the per-owner counters), keys.jobs_running, keys.jobs_active and the
# per-status indexes from the job records, once per Redis dataset and index version (a store written before
# these indexes existed, or a flushed one): atomic, so increments made before it are replaced by the exact
# count. KEYS: counts, running, jobs, active. ARGV: job key prefix/suffix, history prefix/suffix, index version.
_INDEX_VERSION = "3"
_RECOUNT = MOVE_LUA + """
if redis.call('HGET', KEYS[1], 'built') == ARGV[5] then return 0 end
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
local owners = {}
for _, id in ipairs(ids) do
  local owner = redis.call('HGET', ARGV[1] .. id .. ARGV[2], 'owner')
  if owner and owner ~= 'null' then owners[owner] = true end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
for status, _ in pairs(NEXT) do
  if status ~= '' then
    redis.call('DEL', by_status(status))
    for owner, _ in pairs(owners) do redis.call('DEL', by_owner_status(owner, status)) end
  end
end
local epochs = 0
for _, id in ipairs(ids) do
  local job = ARGV[1] .. id .. ARGV[2]
  local status = redis.call('HGET', job, 'status')
  if status then
    move(job, id, nil, status, true)
    epochs = epochs + redis.call('LLEN', ARGV[3] .. id .. ARGV[4])
  end
end
redis.call('HSET', KEYS[1], 'epochs', epochs, 'built', ARGV[5])
return 1
"""

logger = logging.getLogger(__name__)


# New jobs, all or none: KEYS: one job key per job. ARGV: max_queued (0: no limit), the counter of queued
# jobs it is checked against, score, then per job: n_fields, fields..., job_id.
# Returns {1, queued before} or {0, queued} when the jobs would take the owner beyond the limit.
_CREATE = MOVE_LUA + """
local queued = tonumber(redis.call('HGET', COUNTS, ARGV[2]) or '0')
local limit = tonumber(ARGV[1])
if limit > 0 and queued + #KEYS > limit then return {0, queued} end
local at = 4
for k = 1, #KEYS do
  local n = tonumber(ARGV[at])
  local job_id = ARGV[at + 2 * n + 1]
  redis.call('ZADD', JOBS, ARGV[3], job_id)
  for i = at + 1, at + 2 * n, 2 do redis.call('HSET', KEYS[k], ARGV[i], ARGV[i + 1]) end
  move(KEYS[k], job_id, nil, '"queued"')
  local owner = redis.call('HGET', KEYS[k], 'owner')
  if owner ~= 'null' then redis.call('ZADD', jobs_of(owner), ARGV[3], job_id) end
  at = at + 2 * n + 2
end
return {1, queued}
"""

# Remove a finished job's record, history and keys (its model stays). KEYS: job, history, fence, stop,
# checkpoint. ARGV: job_id. Returns '' (no such job), 'deleted', or the status that forbids it.
_DELETE = MOVE_LUA + """
local job_id = ARGV[#ARGV]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if not may_move(status, nil) then return status end
local owner = redis.call('HGET', KEYS[1], 'owner') or 'null'
move(KEYS[1], job_id, status, nil)
redis.call('ZREM', JOBS, job_id)
if owner ~= 'null' then redis.call('ZREM', jobs_of(owner), job_id) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return 'deleted'
"""

# A dataset record and its index entries, only if the owner's quotas leave room for it (checked and counted
# in one step). KEYS: dataset, datasets, datasets_of (the owner's; unused without one).
# ARGV: owner (JSON), bytes, max_bytes, max_datasets (0: no limit), record (JSON), score, dataset_id.
# Returns {1, '', 0}, or {0, resource, the value it would reach} when a quota is in the way.
_ADD_DATASET = USAGE_LUA + """
ensure_usage()
local owner, bytes = ARGV[1], tonumber(ARGV[2])
local max_bytes, max_datasets = tonumber(ARGV[3]), tonumber(ARGV[4])
local count = usage_get(owner, 'datasets') + 1
if max_datasets > 0 and count > max_datasets then return {0, 'datasets', count} end
local used = usage_get(owner, 'bytes') + bytes
if max_bytes > 0 and used > max_bytes then return {0, 'bytes', used} end
redis.call('SET', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
if owner ~= 'null' then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[7]) end
usage_add(owner, 'bytes', bytes)
usage_add(owner, 'datasets', 1)
return {1, '', 0}
"""

# Remove a dataset or model record and its index entries, and give its share of the owner's usage back.
# KEYS: the record, then the sorted sets it is a member of. ARGV: owner (JSON), kind (`datasets` or
# `models`), blob bytes, id. Returns 1, or 0 when the record was already gone (nothing is given back twice).
_FORGET = USAGE_LUA + """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[4]) end
if redis.call('HGET', USAGE, 'built') == USAGE_VERSION then
  usage_add(ARGV[1], 'bytes', -tonumber(ARGV[3]))
  usage_add(ARGV[1], ARGV[2], -1)
end
return 1
"""

# ARGV: owner (JSON). Returns {bytes, datasets, models}.
_USAGE = USAGE_LUA + """
ensure_usage()
return {usage_get(ARGV[1], 'bytes'), usage_get(ARGV[1], 'datasets'), usage_get(ARGV[1], 'models')}
"""


class QueueLimitError(RuntimeError):
    """The owner already has the maximum number of queued jobs (or `adding` more would exceed it)."""

    def __init__(self, queued: int, limit: int, adding: int = 1) -> None:
        super().__init__(f"{queued} jobs queued, {adding} more asked for; the limit is {limit}")
        self.queued = queued
        self.limit = limit
        self.adding = adding


@dataclass(frozen=True)
class JobDraft:
    """A job to create: its TrainConfig dict, its (model) name, and more JobRecord fields (`sweep_id`, ...)."""

    spec: dict[str, Any]
    name: str
    extra: dict[str, Any] = dataclass_field(default_factory=dict)


class JobNotFinishedError(RuntimeError):
    """Only finished jobs can be deleted."""

    def __init__(self, job_id: str, status: JobStatus) -> None:
        super().__init__(f"job {job_id} is {status}; only finished jobs can be deleted")
        self.job_id = job_id
        self.status = status


RESULTS_KEPT = 1000
"""Evaluations and verifications kept per model (the oldest are dropped beyond)."""


class NotFoundError(LookupError):
    """No record with that id."""


class AmbiguousModelNameError(LookupError):
    """A name resolved for everyone (admin) is used by several owners: the caller must give a model id."""

    def __init__(self, name: str, owners: int) -> None:
        super().__init__(f"model name {name!r} is used by {owners} owners; use a model id")
        self.name = name
        self.owners = owners


def _key_parts(build: Any) -> tuple[str, str]:
    """(prefix, suffix) around the id in a key built by `build(id)`."""
    prefix, _, suffix = str(build("\0")).partition("\0")
    return prefix, suffix


ID_PATTERN = r"^[0-9a-f]{32}$"
"""Every id `new_id` makes: 32 lowercase hex digits (a uuid4 without dashes)."""
_ID = re.compile(ID_PATTERN)


def new_id() -> str:
    """A random id (uuid4, hex)."""
    return uuid.uuid4().hex


def is_id(value: str) -> bool:
    """Whether `value` has the shape of an id this store makes (anything else names no record, and must never
    be spliced into a Redis key)."""
    return _ID.fullmatch(value) is not None


def dataset_blob(dataset_id: str) -> str:
    """Relative blob path of a dataset."""
    return f"datasets/{dataset_id}.npz"


def model_blob(model_id: str) -> str:
    """Relative blob path of a model."""
    return f"models/{model_id}.npz"


def state_blob(job_id: str) -> str:
    """Relative blob path of a finished job's final training state (kept for a sweep to continue it)."""
    return f"states/{job_id}.bin"


def _labels(y: np.ndarray) -> tuple[np.ndarray, str]:
    """Labels as int64 or unicode (never object), normalised by the engine's one rule, and their kind."""
    labels = check_labels(y, len(y), "y")
    return labels, "str" if labels.dtype.kind == "U" else "int"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Store:
    """Datasets, jobs and models of Backprop."""

    def __init__(self, redis: Redis, blobs: BlobStore | BlobConfig | Path) -> None:
        self.redis = redis
        self.blobs = blobs if isinstance(blobs, BlobStore) else open_blob_store(blobs)
        self._recount = redis.register_script(_RECOUNT)
        self.aliases = Aliases(redis)
        self._create = redis.register_script(_CREATE)
        self._delete = redis.register_script(_DELETE)
        self._add_dataset = redis.register_script(_ADD_DATASET)
        self._forget = redis.register_script(_FORGET)
        self._usage = redis.register_script(_USAGE)

    def _drop_blob(self, blob: str) -> None:
        """Delete the blob of a record just deleted; with the store unreachable it is left to the orphan sweep."""
        try:
            self.blobs.delete(blob)
        except BlobStoreUnavailableError as exc:
            logger.warning("blob %s not deleted (%s)", blob, exc)

    def _ids(self, index: str, start: int = 0, stop: int = -1) -> list[str]:
        """Members of a sorted set, highest score first."""
        return [_text(raw) for raw in self.redis.zrevrange(index, start, stop)]

    def _window(self, index: str, offset: int, limit: int) -> list[str]:
        return self._ids(index, offset, offset + limit - 1) if limit > 0 else []

    # --- datasets ---------------------------------------------------------------------------------
    def create_dataset(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        owner: str | None,
        name: str | None = None,
        quota: Quota | None = None,
    ) -> DatasetRecord:
        """Store a validated dataset's arrays as a blob and its metadata in Redis.

        QuotaExceededError (and nothing stored) when it would take `owner` past `quota`.
        """
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D array, got {X.ndim} dimensions")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y: expected {X.shape[0]} labels, got shape {y.shape}")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X: expected numbers, got dtype {X.dtype}")
        if X.dtype not in (np.float32, np.float64):  # stored compact: float32 unless already float64
            X = X.astype(np.float32)
        if not np.all(np.isfinite(X)):
            raise ValueError("X: NaN or infinite values")
        y, label_kind = _labels(y)
        buffer = io.BytesIO()
        np.savez(buffer, X=X, y=y)
        data = buffer.getvalue()
        dataset_id = new_id()
        blob = dataset_blob(dataset_id)
        quota = quota or Quota()
        self._check_room(owner, len(data), quota)  # before writing: a refused upload costs no disk
        sha256 = self.blobs.write(blob, data)
        counts = Counter(str(label) for label in y.tolist())
        record = DatasetRecord(
            id=dataset_id,
            name=name,
            owner=owner,
            n_samples=int(X.shape[0]),
            n_features=int(X.shape[1]),
            classes={label: counts[label] for label in sorted(counts)},
            label_kind=label_kind,
            created_at=utc_now(),
            sha256=sha256,
            size_bytes=len(data),
        )
        self._insert_dataset(record, blob, quota)
        return record

    def _check_room(self, owner: str | None, size: int, quota: Quota) -> None:
        """QuotaExceededError when one more dataset of `size` bytes would not fit `owner`'s quota now."""
        usage = self.usage(owner)
        if quota.max_datasets and usage.datasets + 1 > quota.max_datasets:
            raise QuotaExceededError("datasets", usage.datasets + 1, quota.max_datasets)
        if quota.max_bytes and usage.bytes + size > quota.max_bytes:
            raise QuotaExceededError("bytes", usage.bytes + size, quota.max_bytes)

    def _insert_dataset(self, record: DatasetRecord, blob: str, quota: Quota) -> None:
        """The record and its index entries, if the quota still has room (else the blob goes again)."""
        owner = record.owner
        added, resource, value = self._add_dataset(
            keys=[keys.dataset(record.id), keys.datasets(), keys.datasets_of(owner or "")],
            args=[
                json.dumps(owner),
                str(record.size_bytes),
                str(quota.max_bytes),
                str(quota.max_datasets),
                json.dumps({**record.to_dict(), "blob": blob}),
                repr(time.time()),
                record.id,
            ],
        )
        if not int(added):
            self.blobs.delete(blob)
            resource = _text(resource)
            maximum = quota.max_datasets if resource == "datasets" else quota.max_bytes
            raise QuotaExceededError(resource, int(value), maximum)

    def usage(self, owner: str | None) -> Usage:
        """What `owner` stores (blob bytes, datasets, models) and the models its unfinished jobs will add."""
        stored, datasets, models = self._usage(args=[json.dumps(owner)])
        counts = self._job_counts_raw()
        pending = counts.get(keys.queued_of(owner), 0) + counts.get(keys.running_of(owner), 0)
        return Usage(bytes=int(stored), datasets=int(datasets), models=int(models), pending_models=pending)

    def _dataset_data(self, dataset_id: str) -> dict[str, Any] | None:
        if not is_id(dataset_id):
            return None
        raw = self.redis.get(keys.dataset(dataset_id))
        return None if raw is None else dict(json.loads(raw))

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        """The dataset's metadata, or None."""
        data = self._dataset_data(dataset_id)
        return None if data is None else DatasetRecord.from_dict(data)

    def list_datasets(self, *, owner: str | None, offset: int = 0, limit: int = 50) -> tuple[list[DatasetRecord], int]:
        """Datasets newest first (owner None: everyone's) and the total."""
        index = keys.datasets() if owner is None else keys.datasets_of(owner)
        total = int(self.redis.zcard(index))
        records = [self.get_dataset(dataset_id) for dataset_id in self._window(index, offset, limit)]
        return [record for record in records if record is not None], total

    def delete_dataset(self, dataset_id: str) -> bool:
        """Remove a dataset's metadata and blob; False when it did not exist."""
        data = self._dataset_data(dataset_id)
        if data is None:
            return False
        owner = data.get("owner")
        indexes = [keys.datasets()] + ([keys.datasets_of(owner)] if owner is not None else [])
        deleted = self._forget(
            keys=[keys.dataset(dataset_id), *indexes],
            args=[json.dumps(owner), "datasets", str(int(data.get("size_bytes") or 0)), dataset_id],
        )
        self._drop_blob(data["blob"])
        return bool(deleted)

    def load_dataset(self, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The dataset's (X, y), checksum verified; NotFoundError / BlobError otherwise."""
        data = self._dataset_data(dataset_id)
        if data is None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        content = self.blobs.read(data["blob"], data["sha256"])
        try:
            with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
                return arrays["X"], arrays["y"]
        except (ValueError, KeyError, OSError) as exc:
            raise BlobError(f"dataset {dataset_id}: unreadable blob ({exc})") from exc

    # --- jobs -------------------------------------------------------------------------------------
    def create_job(
        self,
        spec: dict[str, Any],
        *,
        owner: str | None,
        dataset_id: str,
        name: str,
        max_queued: int = 0,
        kind: str = "train",
        parent_model_id: str | None = None,
    ) -> JobRecord:
        """A new job record with status `queued` (enqueue it with `enqueue_training`).

        With `max_queued` > 0 the job is created only while `owner` (None: everyone) has fewer jobs queued,
        checked and counted in one step; QueueLimitError otherwise. `kind` is one of JOB_KINDS (`spec` of
        an evaluate or verify job: `{"model_id": ...}`); a training job with `parent_model_id` starts from
        that model's weights.
        """
        if kind not in JOB_KINDS:
            raise ValueError(f"kind must be one of {list(JOB_KINDS)}, got {kind!r}")
        draft = JobDraft(spec, name, {"kind": kind, "parent_model_id": parent_model_id})
        return self.create_jobs([draft], owner=owner, dataset_id=dataset_id, max_queued=max_queued)[0]

    def create_jobs(
        self, drafts: list[JobDraft], *, owner: str | None, dataset_id: str, max_queued: int = 0
    ) -> list[JobRecord]:
        """New `queued` job records, all or none: with `max_queued` > 0 only while `owner` (None: everyone)
        would not have more than `max_queued` jobs queued with them, checked and counted in one step
        (QueueLimitError otherwise, and nothing is created)."""
        records = [
            JobRecord(
                id=new_id(),
                name=draft.name,
                owner=owner,
                dataset_id=dataset_id,
                spec=dict(draft.spec),
                status=JobStatus.QUEUED,
                created_at=utc_now(),
                **draft.extra,
            )
            for draft in drafts
        ]
        args: list[str] = []
        for record in records:
            fields = record.to_dict()
            del fields["history"]
            flat = [text for pair in encode_job_fields(fields).items() for text in pair]
            args += [str(len(fields)), *flat, record.id]
        self._ensure_indexes()
        counter = json.dumps(JobStatus.QUEUED) if owner is None else keys.queued_of(owner)
        created, queued = self._create(
            keys=[keys.job(record.id) for record in records],
            args=[str(max_queued), counter, repr(time.time()), *args],
        )
        if not int(created):
            raise QueueLimitError(int(queued), max_queued, len(records))
        return records

    def get_job(self, job_id: str, *, with_history: bool = True) -> JobRecord | None:
        """The job record with its whole history (or none: `with_history=False`), or None."""
        if not is_id(job_id):
            return None
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.job(job_id))
            if with_history:
                pipe.lrange(keys.job_history(job_id), 0, -1)
            raw, *history = pipe.execute()
        if not raw:
            return None
        return decode_job(raw, history[0] if history else [])

    def job_fields(self, job_ids: list[str], names: tuple[str, ...]) -> list[dict[str, Any] | None]:
        """Each job's `status` and fields `names` (JSON-decoded; None when unset), in one round trip; None for
        a job that does not exist."""
        wanted = ("status", *(name for name in names if name != "status"))
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(keys.job(job_id), list(wanted))
            rows = pipe.execute()
        return [None if row[0] is None else decode_job_fields(wanted, row) for row in rows]

    def job_history(self, job_id: str, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` history entries of a job from index `offset`, and the length of its whole history."""
        if not is_id(job_id):
            return [], 0
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(keys.job_history(job_id), offset, offset + max(limit, 1) - 1)
            pipe.llen(keys.job_history(job_id))
            entries, total = pipe.execute()
        return [json.loads(entry) for entry in entries], int(total)

    def set_job_fields(self, job_id: str, **values: Any) -> None:
        """Overwrite some fields of an unfinished job record (not for fenced worker writes)."""
        Attempts(self.redis).transition(job_id, allowed=tuple(ACTIVE_STATUSES), fields=values)

    def delete_job(self, job_id: str) -> bool:
        """Remove a finished job's record (its model stays); False when it did not exist.

        JobNotFinishedError when the job is still queued, running or stalled.
        """
        outcome = _text(
            self._delete(
                keys=[
                    keys.job(job_id),
                    keys.job_history(job_id),
                    keys.job_fence(job_id),
                    keys.job_stop(job_id),
                    keys.job_checkpoint(job_id),
                ],
                args=[job_id],
            )
        )
        if outcome == "":
            return False
        if outcome != "deleted":
            raise JobNotFinishedError(job_id, JobStatus(json.loads(outcome)))
        self.redis.delete(keys.job_attempt_log(job_id))
        drop_checkpoints(self.blobs, job_id)
        self.blobs.delete(state_blob(job_id))
        return True

    def purge_finished_jobs(self, *, finished_before: datetime) -> int:
        """Delete finished jobs whose `finished_at` is before `finished_before`; returns how many."""
        cutoff = finished_before.timestamp()
        purged = 0
        for status in TERMINAL_STATUSES:
            # created before the cutoff is necessary (a job finishes after it is created), not sufficient
            candidates = self.redis.zrangebyscore(keys.jobs_with_status(status), "-inf", cutoff)
            for raw_id in candidates:
                job_id = _text(raw_id)
                raw = self.redis.hget(keys.job(job_id), "finished_at")
                finished = None if raw is None else json.loads(raw)
                if finished and datetime.fromisoformat(finished).timestamp() < cutoff:
                    with contextlib.suppress(JobNotFinishedError):
                        purged += int(self.delete_job(job_id))
        return purged

    def list_jobs(
        self, *, owner: str | None, status: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[JobRecord], int]:
        """Jobs newest first, optionally of one status, and the total that matched."""
        if status is None:
            index = keys.jobs() if owner is None else keys.jobs_of(owner)
        else:
            self._ensure_indexes()
            index = keys.jobs_with_status(JobStatus(status).value, owner)
        total = int(self.redis.zcard(index))
        selected = self._window(index, offset, limit)
        records = [self.get_job(job_id, with_history=False) for job_id in selected]
        return [record for record in records if record is not None], total

    def active_job_ids(self) -> list[str]:
        """Ids of jobs that are queued, running or stalled (what the reaper looks at), from a kept index."""
        self._job_counts_raw()  # make sure the index was built
        return sorted(_text(raw) for raw in self.redis.smembers(keys.jobs_active()))  # type: ignore[union-attr]

    def _ensure_indexes(self) -> None:
        built = self.redis.hget(keys.job_counts(), "built")
        if built is None or _text(built) != _INDEX_VERSION:
            self._build_indexes()

    def _build_indexes(self) -> None:
        job_prefix, job_suffix = _key_parts(keys.job)
        history_prefix, history_suffix = _key_parts(keys.job_history)
        self._recount(
            keys=[keys.job_counts(), keys.jobs_running(), keys.jobs(), keys.jobs_active()],
            args=[job_prefix, job_suffix, history_prefix, history_suffix, _INDEX_VERSION],
        )

    def _job_counts_raw(self) -> dict[str, int]:
        counts = {_text(field): value for field, value in self.redis.hgetall(keys.job_counts()).items()}
        if _text(counts.get("built", "")) != _INDEX_VERSION:
            self._build_indexes()
            counts = {_text(field): value for field, value in self.redis.hgetall(keys.job_counts()).items()}
        return {field: int(value) for field, value in counts.items()}

    def job_counts(self) -> dict[str, int]:
        """Number of jobs in each status (every status of JOB_STATUSES present), from kept counters."""
        counts: dict[str, int] = {status.value: 0 for status in JOB_STATUSES}
        for field, value in self._job_counts_raw().items():
            if field.startswith('"'):
                counts[str(json.loads(field))] = value
        return counts

    def epochs_trained(self) -> int:
        """Epochs recorded in all jobs' histories, from a kept counter."""
        return self._job_counts_raw().get("epochs", 0)

    def running_progress(self) -> dict[str, dict[str, Any]]:
        """The last progress of each running job by job id ({} before its first epoch); from a kept index."""
        self._job_counts_raw()  # make sure the index was built
        ids = sorted(_text(raw) for raw in self.redis.smembers(keys.jobs_running()))  # type: ignore[union-attr]
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(keys.job(job_id), "progress")
            values = pipe.execute()
        progress: dict[str, dict[str, Any]] = {}
        for job_id, raw in zip(ids, values, strict=True):
            value = None if raw is None else json.loads(raw)
            progress[job_id] = value if isinstance(value, dict) else {}
        return progress

    # --- models -----------------------------------------------------------------------------------
    def _model_data(self, model_id: str) -> dict[str, Any] | None:
        if not is_id(model_id):
            return None
        meta, version = self.redis.hmget(keys.model(model_id), ["meta", "version"])
        if meta is None or version is None:
            return None
        return {**json.loads(meta), "version": int(version)}

    def model_metrics(self, model_ids: list[str]) -> list[dict[str, Any] | None]:
        """Each model's `metrics`, in one round trip; None for a model that does not exist."""
        with self.redis.pipeline(transaction=False) as pipe:
            for model_id in model_ids:
                pipe.hget(keys.model(model_id), "meta")
            metas = pipe.execute()
        return [None if meta is None else dict(json.loads(meta).get("metrics") or {}) for meta in metas]

    def get_model(self, model_id: str) -> ModelRecord | None:
        """The model's metadata, or None."""
        data = self._model_data(model_id)
        if data is None:
            return None
        data.pop("blob", None)
        return ModelRecord(**data)

    def model_exists(self, model_id: str) -> bool:
        """Whether a model with this id exists (one cheap call; records never change once written)."""
        if not is_id(model_id):
            return False
        return bool(self.redis.exists(keys.model(model_id)))

    def lineage_owner(self, name: str, owner: str | None) -> tuple[bool, str | None]:
        """(found, owner) of the lineage called `name` that `owner` resolves to: `owner`'s own; for owner
        None (everyone) the single owner using the name (AmbiguousModelNameError if several)."""
        if owner is not None:
            return True, owner
        ids = self._ids(keys.models_named(name))
        with self.redis.pipeline(transaction=False) as pipe:
            for model_id in ids:
                pipe.hget(keys.model(model_id), "owner")
            owners = {_text(raw) for raw in pipe.execute() if raw is not None}
        if len(owners) > 1:
            raise AmbiguousModelNameError(name, len(owners))
        if not owners:
            return False, None
        only: str | None = json.loads(owners.pop())
        return True, only

    def resolve_model_id(self, ref: str, *, owner: str | None = None) -> str | None:
        """The id of a model given by reference: a model id; a name, meaning the latest version of the
        lineage (owner, name); or `name@alias`, the version the lineage's alias points at.

        With `owner` None (everyone: admins, or no authentication) a name used by a single owner means that
        owner's lineage; a name used by several owners raises AmbiguousModelNameError. This is the one place
        references are resolved; it reads Redis every time, so a moved alias applies to the next call.
        """
        if self.model_exists(ref):
            return ref
        if not valid_ref(ref):
            return None
        name, alias = split_ref(ref)
        found, lineage_owner = self.lineage_owner(name, owner)
        if not found:
            return None
        if alias is None:
            latest = self._ids(keys.model_versions(lineage_owner, name), 0, 0)
            return latest[0] if latest else None
        pointer = self.aliases.get(lineage_owner, name, alias)
        if pointer is None or not self.model_exists(pointer.model_id):
            return None
        return pointer.model_id

    def resolve_model(self, id_or_name: str, *, owner: str | None = None) -> ModelRecord | None:
        """A model by id, or by name (see `resolve_model_id`: `owner`'s latest version, or everyone's)."""
        model_id = self.resolve_model_id(id_or_name, owner=owner)
        return None if model_id is None else self.get_model(model_id)

    def lineage_versions(self, owner: str | None, name: str) -> dict[int, str]:
        """Version number -> model id of every live version of the lineage (owner, name), oldest first."""
        members: list[tuple[bytes, float]] = self.redis.zrange(  # type: ignore[assignment]
            keys.model_versions(owner, name), 0, -1, withscores=True
        )
        return {int(score): _text(model_id) for model_id, score in members}

    def list_models(
        self, *, owner: str | None, name: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[ModelRecord], int]:
        """Models newest first and the total; with `name`: `owner`'s versions of it, newest version first
        (owner None: every owner's models of that name, newest first)."""
        if name is None:
            index = keys.models() if owner is None else keys.models_of(owner)
        else:
            index = keys.models_named(name) if owner is None else keys.model_versions(owner, name)
        total = int(self.redis.zcard(index))
        records = [self.get_model(model_id) for model_id in self._window(index, offset, limit)]
        return [record for record in records if record is not None], total

    def delete_model(self, model_id: str) -> bool:
        """Remove a model's metadata, indexes and blob; False when it did not exist."""
        data = self._model_data(model_id)
        if data is None:
            return False
        owner = data.get("owner")
        indexes = [keys.models(), keys.model_versions(owner, data["name"]), keys.models_named(data["name"])]
        if owner is not None:
            indexes.append(keys.models_of(owner))
        deleted = self._forget(
            keys=[keys.model(model_id), *indexes],
            args=[json.dumps(owner), "models", str(int(data.get("size_bytes") or 0)), model_id],
        )
        self.redis.delete(keys.model_evaluations(model_id), keys.model_verifications(model_id))
        self._drop_blob(data["blob"])
        return bool(deleted)

    def load_model_bytes(self, model_id: str) -> bytes:
        """The model blob (engine.loads input), checksum verified; NotFoundError / BlobError otherwise."""
        data = self._model_data(model_id)
        if data is None:
            raise NotFoundError(f"model {model_id} not found")
        return self.blobs.read(data["blob"], data["sha256"])

    # --- evaluations and verifications of a model -------------------------------------------------
    def _append(self, key: str, entry: dict[str, Any]) -> None:
        with self.redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(entry))
            pipe.ltrim(key, -RESULTS_KEPT, -1)
            pipe.execute()

    def _page(self, key: str, offset: int, limit: int | None) -> tuple[list[dict[str, Any]], int]:
        stop = -1 if limit is None else offset + max(limit, 1) - 1
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(key, offset, stop)
            pipe.llen(key)
            raw, total = pipe.execute()
        return [json.loads(entry) for entry in raw], int(total)

    def add_evaluation(self, model_id: str, entry: dict[str, Any]) -> None:
        """Append an evaluation report to the model's (the newest RESULTS_KEPT are kept)."""
        self._append(keys.model_evaluations(model_id), entry)

    def list_evaluations(
        self, model_id: str, offset: int = 0, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """The model's evaluation reports, oldest first (a page of them), and how many there are."""
        return self._page(keys.model_evaluations(model_id), offset, limit)

    def find_evaluation(self, model_id: str, dataset_id: str, dataset_sha256: str) -> dict[str, Any] | None:
        """The newest stored evaluation of the model on that dataset (same content), or None."""
        for entry in reversed(self.list_evaluations(model_id)[0]):
            if entry.get("dataset_id") == dataset_id and entry.get("dataset_sha256") == dataset_sha256:
                return dict(entry)
        return None

    def add_verification(self, model_id: str, entry: dict[str, Any]) -> None:
        """Append a verification result to the model's (the newest RESULTS_KEPT are kept)."""
        self._append(keys.model_verifications(model_id), entry)

    def list_verifications(
        self, model_id: str, offset: int = 0, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """The model's verification results, oldest first (a page of them), and how many there are."""
        return self._page(keys.model_verifications(model_id), offset, limit)

    # --- attempts of a job (for receipts) ---------------------------------------------------------
    def log_attempt(self, job_id: str, entry: dict[str, Any]) -> None:
        """Record how an attempt of the job started (its number, worker, the epoch it resumed from)."""
        self.redis.rpush(keys.job_attempt_log(job_id), json.dumps(entry))

    def attempt_log(self, job_id: str) -> list[dict[str, Any]]:
        """How every attempt of the job started, oldest first."""
        raw: list[bytes] = self.redis.lrange(keys.job_attempt_log(job_id), 0, -1)  # type: ignore[assignment]
        return [json.loads(entry) for entry in raw]
