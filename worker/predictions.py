"""Batch predictions: their records, their RQ entry point `run_prediction`, and the readers of their input
and result.

A batch prediction is its own resource (record `keys.prediction(id)`, a hash of JSON values) with the job
statuses of `worker.jobstate`; every status change is checked against `TRANSITIONS` in one Lua step. The
worker reads the input in row chunks, writes the result blob (an .npz of `classes`, `probabilities` and
`predictions`) chunk by chunk, whole or not at all, and checks the stop flag between chunks. The result
does not need the model afterwards: deleting the model leaves finished results readable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from redis import Redis
from rq import get_current_job
from rq.exceptions import InvalidJobOperation
from rq.job import JobStatus as RQStatus
from rq.timeouts import JobTimeoutException

import engine
from worker import keys, runtime
from worker.blobs import BlobError, BlobStore, BlobStoreUnavailableError, StorageFullError
from worker.jobstate import TERMINAL_STATUSES, TRANSITIONS, JobStatus
from worker.npyfiles import ArrayFormatError, iter_rows, member_header, member_writer, write_member
from worker.queue import rq_queue
from worker.records import utc_now
from worker.store import NotFoundError, Store, dataset_blob, is_id, new_id

logger = logging.getLogger(__name__)

JOB_FUNCTION = "worker.predictions.run_prediction"  # one of rqjob.ENTRY_POINTS
_RESULT_TTL = 3600
_FAILED_TTL = 7 * 24 * 3600
_REASON_LIMIT = 300

# KEYS: record. ARGV: allowed statuses (comma separated JSON texts), field/value pairs (JSON values).
# Sets the fields when the record's status is one of the allowed ones; 1 when it did, 0 otherwise.
_MOVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


# KEYS: record, stop flag. ARGV: the statuses that may be deleted (comma separated JSON texts). 1: deleted.
_DELETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == status then
    redis.call('DEL', KEYS[1], KEYS[2])
    return 1
  end
end
return 0
"""


def sources(target: JobStatus) -> tuple[JobStatus, ...]:
    """The statuses from which `TRANSITIONS` allows a move to `target`."""
    return tuple(old for old, targets in TRANSITIONS.items() if old is not None and target in targets)


@dataclass(frozen=True)
class PredictionRecord:
    """A batch prediction as the API shows it, with where its input and result live."""

    id: str
    owner: str | None
    model_id: str
    model_name: str
    model_version: int
    classes: list[Any]
    n_features: int
    n_rows: int
    source: str  # "dataset" or "upload"
    dataset_id: str | None
    input_blob: str
    input_sha256: str
    feature_names: list[str] | None
    chunk_rows: int
    status: JobStatus
    created_at: str
    progress: dict[str, Any] | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result_blob: str | None = None
    result_sha256: str | None = None
    result_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


_FIELDS = tuple(f.name for f in fields(PredictionRecord))


def result_blob(prediction_id: str) -> str:
    """Relative blob path of a batch prediction's result."""
    return f"predictions/{prediction_id}.npz"


def input_blob(prediction_id: str) -> str:
    """Relative blob path of an uploaded input of a batch prediction."""
    return f"predictions/{prediction_id}-input.npz"


class Predictions:
    """Batch-prediction records in Redis; their blobs under the blob directory."""

    def __init__(self, redis: Redis, blobs: BlobStore) -> None:
        self.redis = redis
        self.blobs = blobs
        self._move = redis.register_script(_MOVE)
        self._delete = redis.register_script(_DELETE)

    def create(
        self,
        *,
        owner: str | None,
        model: Any,
        n_rows: int,
        dataset_id: str | None,
        X: np.ndarray | None,
        sha256: str | None,
        feature_names: list[str] | None,
        chunk_rows: int,
    ) -> PredictionRecord:
        """A queued record for `model` (a ModelRecord) on a stored dataset (`dataset_id`, `sha256`) or on
        uploaded features `X` (stored here as the prediction's own input blob)."""
        prediction_id = new_id()
        if X is not None:
            blob = input_blob(prediction_id)
            with self.blobs.writer(blob) as writer, zipfile.ZipFile(writer, "w") as archive:  # type: ignore[call-overload]
                write_member(archive, "X", X)
            digest = writer.sha256
        else:
            assert dataset_id is not None and sha256 is not None  # the caller passes one source or the other
            blob, digest = dataset_blob(dataset_id), sha256
        record = PredictionRecord(
            id=prediction_id,
            owner=owner,
            model_id=model.id,
            model_name=model.name,
            model_version=model.version,
            classes=list(model.classes),
            n_features=model.n_features,
            n_rows=n_rows,
            source="upload" if X is not None else "dataset",
            dataset_id=dataset_id,
            input_blob=blob,
            input_sha256=digest,
            feature_names=feature_names,
            chunk_rows=chunk_rows,
            status=JobStatus.QUEUED,
            created_at=utc_now(),
        )
        self.redis.hset(
            keys.prediction(prediction_id),
            mapping={name: json.dumps(value) for name, value in record.to_dict().items()},  # type: ignore[arg-type]
        )
        return record

    def get(self, prediction_id: str) -> PredictionRecord | None:
        """The record, or None (also for anything that is not an id, without a Redis call)."""
        if not is_id(prediction_id):
            return None
        raw = self.redis.hgetall(keys.prediction(prediction_id))
        if not raw:
            return None
        data = {key.decode(): json.loads(value) for key, value in raw.items()}  # type: ignore[union-attr]
        known = {name: data[name] for name in _FIELDS if name in data}
        known["status"] = JobStatus(known["status"])
        return PredictionRecord(**known)

    def move(self, prediction_id: str, target: JobStatus, **values: Any) -> bool:
        """Set `values` and status `target` if `TRANSITIONS` allows the move from the current status."""
        pairs: list[str] = []
        for name, value in {**values, "status": target}.items():
            pairs += [name, json.dumps(value)]
        allowed = ",".join(json.dumps(status.value) for status in sources(target))
        return bool(self._move(keys=[keys.prediction(prediction_id)], args=[allowed, *pairs]))

    def update(self, prediction_id: str, **values: Any) -> bool:
        """Set fields (not the status) while the prediction is running."""
        pairs: list[str] = []
        for name, value in values.items():
            pairs += [name, json.dumps(value)]
        allowed = json.dumps(JobStatus.RUNNING.value)
        return bool(self._move(keys=[keys.prediction(prediction_id)], args=[allowed, *pairs]))

    def delete(self, record: PredictionRecord) -> bool:
        """Remove a finished prediction's record, its result and its uploaded input (a dataset input stays);
        False when it was not finished (or is gone)."""
        allowed = ",".join(json.dumps(status.value) for status in TERMINAL_STATUSES)
        if not self._delete(keys=[keys.prediction(record.id), keys.prediction_stop(record.id)], args=[allowed]):
            return False
        self.blobs.delete(result_blob(record.id))
        if record.source == "upload":
            self.blobs.delete(record.input_blob)
        return True

    def stop_requested(self, prediction_id: str) -> bool:
        """Whether someone asked the running prediction to stop."""
        return bool(self.redis.exists(keys.prediction_stop(prediction_id)))


def enqueue_prediction(redis: Redis, record: PredictionRecord, *, queue_name: str, timeout: int) -> None:
    """Push the RQ job of a batch prediction (args: only its id; not retried: a re-run starts over)."""
    rq_queue(redis, queue_name).enqueue_call(
        JOB_FUNCTION,
        args=(record.id,),
        job_id=record.id,
        timeout=timeout,
        result_ttl=_RESULT_TTL,
        failure_ttl=_FAILED_TTL,
        description=f"batch prediction {record.id}",
    )


def cancel_prediction(predictions: Predictions, record: PredictionRecord, *, queue_name: str) -> PredictionRecord:
    """Queued: removed from the queue and `canceled` now. Running: stops before its next chunk."""
    if record.status in TERMINAL_STATUSES:
        return record
    predictions.redis.set(keys.prediction_stop(record.id), "1", ex=7 * 24 * 3600)
    if predictions.move(record.id, JobStatus.CANCELED, finished_at=utc_now()) and record.status == "queued":
        queue = rq_queue(predictions.redis, queue_name)
        queue.remove(record.id)
        rq_job = queue.fetch_job(record.id)
        if rq_job is not None:
            with contextlib.suppress(InvalidJobOperation):  # already canceled by another request
                rq_job.cancel()
    return predictions.get(record.id) or record


def reconcile_prediction(predictions: Predictions, record: PredictionRecord, *, queue_name: str) -> PredictionRecord:
    """A running prediction whose RQ job ended without a result (its worker died): `failed` now."""
    if record.status != JobStatus.RUNNING:
        return record
    rq_job = rq_queue(predictions.redis, queue_name).fetch_job(record.id)
    rq_status = None if rq_job is None else rq_job.get_status()
    if rq_status in (RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED, RQStatus.FINISHED, None):
        reason = "the worker running the prediction stopped without a result"
        if predictions.move(record.id, JobStatus.FAILED, error=reason, finished_at=utc_now()):
            logger.error("prediction %s failed: %s", record.id, reason)
        return predictions.get(record.id) or record
    return record


# --- the worker's side ---------------------------------------------------------------------------


class PredictionCanceledError(Exception):
    """The stop flag was seen between two chunks."""


def failure_reason(exc: BaseException) -> str:
    """A short, client-safe reason for a failed prediction."""
    if isinstance(exc, NotFoundError):
        text = f"{exc} (was it deleted?)"
    elif isinstance(exc, StorageFullError):
        text = f"the result could not be stored: {exc}"
    elif isinstance(exc, BlobStoreUnavailableError):
        text = str(exc)
    elif isinstance(exc, JobTimeoutException):
        text = "the prediction exceeded its time limit"
    elif isinstance(exc, BlobError):
        text = f"stored data is unusable: {exc} (was the dataset deleted?)"
    elif isinstance(exc, ArrayFormatError | ValueError):
        text = f"invalid input: {exc}"
    elif isinstance(exc, MemoryError):
        text = "out of memory while predicting"
    else:
        text = f"internal error ({type(exc).__name__})"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:_REASON_LIMIT]


def run_prediction(prediction_id: str) -> dict[str, Any]:
    """RQ entry point: compute batch prediction `prediction_id` (everything else is in its record)."""
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("run_prediction must run inside an RQ worker")
    store = Store(rq_job.connection, runtime.blob_store())
    predictions = Predictions(store.redis, store.blobs)
    record = predictions.get(prediction_id)
    started = record is not None and predictions.move(
        prediction_id, JobStatus.RUNNING, started_at=utc_now(), progress=_progress(0, record.n_rows)
    )
    if record is None or not started:
        status = record.status if record else "missing"
        logger.info("prediction %s is %s; not running it", prediction_id, status)
        return {"prediction_id": prediction_id, "status": status}
    try:
        sha256, size = _compute(store, predictions, record)
    except PredictionCanceledError:
        logger.info("prediction %s canceled", prediction_id)
        return {"prediction_id": prediction_id, "status": "canceled"}
    except Exception as exc:
        reason = failure_reason(exc)
        logger.exception("prediction %s failed: %s", prediction_id, reason)
        predictions.move(prediction_id, JobStatus.FAILED, error=reason, finished_at=utc_now())
        return {"prediction_id": prediction_id, "status": "failed", "error": reason}
    done = {
        "result_blob": result_blob(prediction_id),
        "result_sha256": sha256,
        "result_size": size,
        "finished_at": utc_now(),
        "progress": _progress(record.n_rows, record.n_rows),
    }
    if not predictions.move(prediction_id, JobStatus.SUCCEEDED, **done):  # canceled after the last chunk
        store.blobs.delete(result_blob(prediction_id))
        return {"prediction_id": prediction_id, "status": "canceled"}
    logger.info("prediction %s succeeded: %d rows", prediction_id, record.n_rows)
    return {"prediction_id": prediction_id, "status": "succeeded"}


def _progress(done: int, total: int) -> dict[str, Any]:
    return {
        "rows_done": done,
        "rows_total": total,
        "fraction": round(done / total, 6) if total else 1.0,
        "updated_at": utc_now(),
    }


def _compute(store: Store, predictions: Predictions, record: PredictionRecord) -> tuple[str, int]:
    """Write the result blob chunk by chunk; (sha256, size). Only the label of each row (its class index,
    4 bytes a row) is kept in memory until the `predictions` member is written after `probabilities`."""
    model = engine.loads(store.load_model_bytes(record.model_id))
    classes = np.asarray(record.classes)
    k = len(classes)
    indices = np.empty(record.n_rows, dtype=np.int32)
    done = 0
    last_report = time.monotonic()
    with (
        store.blobs.open_verified(record.input_blob, record.input_sha256) as source,
        zipfile.ZipFile(source) as inputs,
        store.blobs.writer(result_blob(record.id)) as writer,
        zipfile.ZipFile(writer, "w") as archive,  # type: ignore[call-overload]
    ):
        shape, _ = member_header(inputs, "X")
        if len(shape) != 2 or shape[0] != record.n_rows or shape[1] != record.n_features:
            raise ValueError(f"X has shape {shape}, expected ({record.n_rows}, {record.n_features})")
        write_member(archive, "classes", classes)
        with member_writer(archive, "probabilities", np.dtype(np.float64), (record.n_rows, k)) as stream:
            for X in iter_rows(inputs, "X", record.chunk_rows):
                if predictions.stop_requested(record.id):
                    raise PredictionCanceledError(record.id)
                probabilities = chunk_probabilities(model, X, first_row=done)
                indices[done : done + len(X)] = np.argmax(probabilities, axis=1)
                stream.write(probabilities.tobytes())
                done += len(X)
                if time.monotonic() - last_report >= 0.5 or done == record.n_rows:
                    predictions.update(record.id, progress=_progress(done, record.n_rows))
                    last_report = time.monotonic()
        labels = classes[indices[:0]]
        with member_writer(archive, "predictions", labels.dtype, (record.n_rows,)) as stream:
            for start in range(0, record.n_rows, record.chunk_rows):
                stream.write(classes[indices[start : start + record.chunk_rows]].tobytes())
    return writer.sha256, writer.size


def chunk_probabilities(model: engine.Model, X: np.ndarray, *, first_row: int) -> np.ndarray:
    """Class probabilities of one chunk of rows, as float64; ValueError naming the first row (1-based, in
    the whole input) whose probabilities are not finite."""
    with np.errstate(all="ignore"):
        probabilities = np.asarray(model.predict_proba(np.asarray(X, dtype=np.float64)), dtype=np.float64)
    finite = np.isfinite(probabilities).all(axis=1)
    if not finite.all():
        row = first_row + int(np.argmin(finite)) + 1
        raise ValueError(f"row {row}: values too large, the probabilities are not finite")
    return probabilities


# --- readers for the API -------------------------------------------------------------------------


@contextlib.contextmanager
def open_result(blobs: BlobStore, record: PredictionRecord) -> Iterator[zipfile.ZipFile]:
    """The finished result's archive (checksum verified before anything is read)."""
    if record.result_blob is None or record.result_sha256 is None:
        raise NotFoundError(f"prediction {record.id} has no result")
    with blobs.open_verified(record.result_blob, record.result_sha256) as handle, zipfile.ZipFile(handle) as archive:
        yield archive


@contextlib.contextmanager
def open_input(blobs: BlobStore, record: PredictionRecord) -> Iterator[zipfile.ZipFile]:
    """The input's archive (member `X`; checksum verified); BlobError when the dataset was deleted."""
    with blobs.open_verified(record.input_blob, record.input_sha256) as handle, zipfile.ZipFile(handle) as archive:
        yield archive
