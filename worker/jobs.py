"""RQ entry points. `run_training(job_id)` trains the job's network, resuming from its last checkpoint."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import get_current_job
from rq.timeouts import JobTimeoutException

import engine
from worker import runtime
from worker.attempts import Attempts, SupersededAttemptError
from worker.blobs import BlobError, BlobStoreUnavailableError, retry_unavailable
from worker.checkpoints import drop_checkpoints, load_checkpoint, save_checkpoint
from worker.evaluation import run_evaluation_job, validation_report
from worker.joblog import JobLogger, job_logger
from worker.jobstate import JobStatus
from worker.progress import ProgressReporter, StopListener
from worker.receipts import build_receipt, parent_model
from worker.records import JobRecord, utc_now
from worker.store import NotFoundError, Store, model_blob, new_id, state_blob
from worker.sweeps import advance_sweep
from worker.verification import run_verification_job

_REASON_LIMIT = 300


def failure_reason(exc: BaseException, *, dataset_id: str | None = None, timeout: int | None = None) -> str:
    """A short, client-safe reason for a failed job (no traceback)."""
    if isinstance(exc, engine.TrainingDivergedError):
        text = str(exc) or "training diverged"
        epoch = getattr(exc, "epoch", None)
        if epoch is not None and "epoch" not in text:
            text = f"{text} (epoch {epoch})"
    elif isinstance(exc, NotFoundError):
        text = f"dataset {dataset_id} not found (was it deleted?)" if dataset_id else str(exc)
    elif isinstance(exc, BlobError):
        text = f"stored data is unusable: {exc}"
    elif isinstance(exc, BlobStoreUnavailableError):
        text = f"{exc}; no retries are left"
    elif isinstance(exc, JobTimeoutException):
        text = f"training exceeded its time limit of {timeout} s" if timeout else "training exceeded its time limit"
    elif isinstance(exc, MemoryError):
        text = "out of memory while training"
    elif isinstance(exc, ValueError | TypeError):
        text = f"invalid job: {exc}"
    else:
        text = f"internal error ({type(exc).__name__})"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first_line[:_REASON_LIMIT]


def run_training(job_id: str) -> dict[str, Any]:
    """Train job `job_id` (the spec is in its record); returns a small JSON summary for RQ."""
    log = job_logger(__name__, job_id)
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("run_training must run inside an RQ worker")
    connection: Redis = rq_job.connection
    config = runtime.current()
    attempts = Attempts(connection)
    begin = attempts.begin(
        job_id,
        started_at=utc_now(),
        worker=rq_job.worker_name,
        heartbeat_interval=config.job_monitoring_interval,
    )
    if begin.token < 0:
        log.error("no job record; nothing to run")
        return {"job_id": job_id, "status": "missing"}
    if begin.token == 0:
        log.info("already %s; not running it again", begin.previous_status)
        return {"job_id": job_id, "status": begin.previous_status}
    token = begin.token
    store = Store(connection, runtime.blob_store())
    record = store.get_job(job_id)
    if record is None:  # deleted between begin and now
        log.error("job record vanished")
        return {"job_id": job_id, "status": "missing"}
    log.info("attempt %d started (token %d, worker %s)", record.attempts, token, rq_job.worker_name)
    if config.blas_threads is not None:
        attempts.write(job_id, token, {"blas_threads": config.blas_threads})
    try:
        outcome = _run(store, attempts, record, token, log, retries_left=rq_job.retries_left)
    finally:
        if record.sweep_id:
            _advance(store, record.sweep_id, log)
    return outcome


def _advance(store: Store, sweep_id: str, log: JobLogger) -> None:
    """Let the child's sweep move on (it decides from the stored records; a failure here never fails the job,
    the API's reaper advances the sweep later)."""
    try:
        advance_sweep(store, sweep_id)
    except Exception:
        log.exception("could not advance sweep %s", sweep_id)


def _run(
    store: Store, attempts: Attempts, record: JobRecord, token: int, log: JobLogger, *, retries_left: int | None
) -> dict[str, Any]:
    """`_train`, with the attempt's failures recorded (an unreachable blob store is left to RQ's retry while
    `retries_left`)."""
    job_id = record.id
    try:
        if record.kind == "evaluate":
            return run_evaluation_job(store, attempts, record, token)
        if record.kind == "verify":
            return run_verification_job(store, attempts, record, token)
        return _train(store, attempts, record, token, log)
    except SupersededAttemptError:
        log.warning("attempt with token %d superseded; stopping without writing", token)
        return {"job_id": job_id, "status": "superseded"}
    except (RedisConnectionError, RedisTimeoutError):
        log.exception("lost Redis while training; leaving the job to RQ's retry")
        raise
    except BlobStoreUnavailableError as exc:
        if retries_left:
            log.error("%s; leaving the job to RQ's retry (%d left)", exc, retries_left)
            raise
        return _fail(store, attempts, record, token, exc, log)
    except Exception as exc:
        return _fail(store, attempts, record, token, exc, log)


def _fail(
    store: Store, attempts: Attempts, record: JobRecord, token: int, exc: Exception, log: JobLogger
) -> dict[str, Any]:
    """Record the attempt's failure (if it is still the current one) and drop the job's checkpoints."""
    job_id = record.id
    reason = failure_reason(exc, dataset_id=record.dataset_id, timeout=record.timeout)
    expected = isinstance(
        exc,
        engine.TrainingDivergedError
        | NotFoundError
        | BlobError
        | BlobStoreUnavailableError
        | JobTimeoutException
        | ValueError,
    )
    if expected:
        log.error("failed: %s", reason)
    else:
        log.exception("failed with an unexpected error: %s", reason)
    applied, _ = attempts.write(
        job_id,
        token,
        {"status": JobStatus.FAILED, "error": reason, "finished_at": utc_now()},
        drop_checkpoint=True,
    )
    if not applied:
        log.warning("attempt superseded; failure not recorded")
        return {"job_id": job_id, "status": "superseded"}
    drop_checkpoints(store.blobs, job_id)
    return {"job_id": job_id, "status": "failed", "error": reason}


def _train(store: Store, attempts: Attempts, record: JobRecord, token: int, log: JobLogger) -> dict[str, Any]:
    config = runtime.current()
    patience = config.blob_retry_seconds
    X, y = retry_unavailable(lambda: store.load_dataset(record.dataset_id), seconds=patience, what="dataset")
    train_config = engine.TrainConfig.from_dict(record.spec)
    checkpoint = retry_unavailable(
        lambda: load_checkpoint(store.redis, store.blobs, record.id), seconds=patience, what="checkpoint"
    )
    training = None
    if checkpoint is not None:
        try:
            training = engine.Training.resume(X, y, checkpoint[1])
            log.info("resuming from the checkpoint of epoch %d", training.epoch)
        except ValueError as exc:  # ModelFormatError included: a state this engine cannot read
            log.warning("checkpoint of epoch %d unusable (%s); starting from epoch 0", checkpoint[0], exc)
    if training is None and record.continues:
        training = _continue(store, attempts, record, token, X, y, train_config)
        log.info("continuing job %s from epoch %d", record.continues, training.epoch)
    parent, init = None, None
    if record.parent_model_id is not None:
        parent_weights, parent = parent_model(store, record.parent_model_id)
        init = parent_weights.params
    if training is None:
        training = engine.Training(X, y, train_config, init=init)
    current = get_current_job()
    started = {"attempt": record.attempts, "started_at": utc_now(), "from_epoch": training.epoch}
    store.log_attempt(record.id, {**started, "worker": None if current is None else current.worker_name})
    reporter = ProgressReporter(
        attempts, record.id, token, start_epoch=training.epoch, min_interval=config.progress_min_interval
    )
    with contextlib.closing(StopListener(attempts, record.id)) as stop_requested:
        canceled = _run_epochs(store, attempts, record, token, training, reporter, stop_requested, log)
    if canceled is not None:
        return canceled
    return _commit(store, attempts, record, token, training, (X, y), parent, reporter, log)


def _run_epochs(
    store: Store,
    attempts: Attempts,
    record: JobRecord,
    token: int,
    training: engine.Training,
    reporter: ProgressReporter,
    stop_requested: StopListener,
    log: JobLogger,
) -> dict[str, Any] | None:
    """Epochs until the training finished (None), or until a stop request (the canceled job's summary)."""
    config = runtime.current()
    last_checkpoint = time.monotonic()
    while not training.finished:
        if stop_requested():
            reporter.flush()
            applied, _ = attempts.write(
                record.id, token, {"status": JobStatus.CANCELED, "finished_at": utc_now()}, drop_checkpoint=True
            )
            if not applied:
                raise SupersededAttemptError(record.id, token)
            drop_checkpoints(store.blobs, record.id)
            log.info("canceled at epoch %d", training.epoch)
            return {"job_id": record.id, "status": "canceled", "epoch": training.epoch}
        try:
            metrics = training.run_epoch()
        except Exception:
            reporter.flush()  # the epochs that did finish stay in the history
            raise
        reporter.epoch(engine.json_safe(metrics.to_dict()), final=training.finished)
        due = time.monotonic() - last_checkpoint >= config.checkpoint_seconds
        if not training.finished and due:
            reporter.flush()
            save_checkpoint(attempts, store.blobs, record.id, token, epoch=training.epoch, state=training.state_bytes())
            last_checkpoint = time.monotonic()
    return None


def _checked_fields(
    store: Store,
    record: JobRecord,
    training: engine.Training,
    model: engine.Model,
    data_arrays: tuple[np.ndarray, np.ndarray],
    parent: dict[str, Any] | None,
) -> dict[str, Any]:
    """The model record's `validation_report`, `receipt` and `parent_model_id`."""
    dataset = store.get_dataset(record.dataset_id)
    if dataset is None:
        raise NotFoundError(f"dataset {record.dataset_id} not found")
    receipt = build_receipt(
        dataset_id=record.dataset_id,
        dataset_sha256=dataset.sha256,
        config=training.config.to_dict(),
        attempts=store.attempt_log(record.id),
        model=model,
        parent=parent,
    )
    return {
        "validation_report": validation_report(model, *data_arrays, training.validation_indices),
        "receipt": receipt,
        "parent_model_id": record.parent_model_id,
    }


def _continue(
    store: Store,
    attempts: Attempts,
    record: JobRecord,
    token: int,
    X: Any,
    y: Any,
    train_config: engine.TrainConfig,
) -> engine.Training:
    """The final training state of the job `record.continues`, running on to this job's `epochs`.

    The state's config becomes this job's (the same options but `epochs`); its history is this job's history
    up to there, so a later checkpoint's resume trims it like any other. With the constant learning-rate
    schedule this is the very run that training to `epochs` in one job would have been.
    """
    previous = store.get_job(str(record.continues), with_history=False)
    pointer = None if previous is None else previous.final_state
    if not pointer:
        raise ValueError(f"job {record.continues}, which this job continues, left no training state")
    state = engine.TrainingState.unpack(store.blobs.read(pointer["path"], pointer["sha256"]))
    state.config = train_config
    state.finished = False
    state.stop_reason = None
    if not attempts.write(record.id, token, {}, state.history, trim_history=0)[0]:
        raise SupersededAttemptError(record.id, token)
    return engine.Training(X, y, state)


def _model_meta(
    record: JobRecord,
    model_id: str,
    blob: str,
    sha256: str,
    size_bytes: int,
    training: engine.Training,
    result: engine.TrainResult,
    checked: dict[str, Any],
) -> dict[str, Any]:
    """The stored model record (JSON-safe) of a finished training."""
    model = result.model
    meta: dict[str, Any] = engine.json_safe(
        {
            "id": model_id,
            "name": record.name,
            "owner": record.owner,
            "dataset_id": record.dataset_id,
            "job_id": record.id,
            "created_at": utc_now(),
            "layer_sizes": list(model.layer_sizes),
            "activation": model.activation,
            "output": model.output,
            "classes": list(model.classes),
            "n_features": model.n_features,
            "n_parameters": model.n_parameters,
            "metrics": dict(model.metrics),
            "history": [entry.to_dict() for entry in result.history],
            "config": training.config.to_dict(),
            "sha256": sha256,
            "size_bytes": size_bytes,
            "blob": blob,
            **checked,
        }
    )
    return meta


def _commit(
    store: Store,
    attempts: Attempts,
    record: JobRecord,
    token: int,
    training: engine.Training,
    data_arrays: tuple[np.ndarray, np.ndarray],
    parent: dict[str, Any] | None,
    reporter: ProgressReporter,
    log: JobLogger,
) -> dict[str, Any]:
    result = training.result()
    model = result.model
    checked = _checked_fields(store, record, training, model, data_arrays, parent)
    data = engine.dumps(model)
    model_id = new_id()
    blob = model_blob(model_id)
    patience = runtime.current().blob_retry_seconds
    sha256 = retry_unavailable(lambda: store.blobs.write(blob, data), seconds=patience, what="model")
    meta = _model_meta(record, model_id, blob, sha256, len(data), training, result, checked)
    job_fields: dict[str, Any] = {"status": JobStatus.SUCCEEDED, "model_id": model_id, "finished_at": utc_now()}
    if record.keep_state:  # a sweep may continue this run: keep where it ended
        path = state_blob(record.id)
        state = training.state_bytes()
        state_sha256 = retry_unavailable(lambda: store.blobs.write(path, state), seconds=patience, what="state")
        job_fields["final_state"] = {"path": path, "sha256": state_sha256}
    reporter.flush()
    version, _ = attempts.commit_model(
        record.id,
        token,
        model_id=model_id,
        name=record.name,
        owner=record.owner,
        meta=meta,
        score=time.time(),
        job_fields=job_fields,
    )
    if version == 0:
        store.blobs.delete(blob)
        store.blobs.delete(state_blob(record.id))
        raise SupersededAttemptError(record.id, token)
    drop_checkpoints(store.blobs, record.id)
    log.info("succeeded: model %s (%s v%d), stop reason %s", model_id, record.name, version, result.stop_reason)
    return {"job_id": record.id, "status": "succeeded", "model_id": model_id, "version": version}
