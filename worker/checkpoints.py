"""Checkpoints of running jobs: the engine's training state as a blob, pointed to by a key the app owns."""

from __future__ import annotations

import logging

from redis import Redis

from worker import keys
from worker.attempts import Attempts, SupersededAttemptError
from worker.blobs import BlobError, BlobStore, BlobStoreUnavailableError, StorageFullError

logger = logging.getLogger(__name__)


def checkpoint_prefix(job_id: str) -> str:
    """How the blob paths of every checkpoint of a job begin."""
    return f"checkpoints/{job_id}-"


def checkpoint_blob(job_id: str, token: int, epoch: int) -> str:
    """Relative blob path of one checkpoint (unique per attempt and epoch)."""
    return f"{checkpoint_prefix(job_id)}{token}-{epoch}.bin"


def checkpoint_paths(redis: Redis, job_id: str) -> set[str]:
    """The blob paths the job's checkpoint pointer names now: its checkpoint and the one before (kept one
    generation longer, for a Redis that rolls back its last writes)."""
    raw = redis.hmget(keys.job_checkpoint(job_id), ["path", "previous"])
    return {value.decode() if isinstance(value, bytes) else str(value) for value in raw if value}


def save_checkpoint(
    attempts: Attempts, blobs: BlobStore, job_id: str, token: int, *, epoch: int, state: bytes
) -> bool:
    """Write the state blob, then point the job at it if `token` is current; drop the one before last.

    A blob that cannot be written (full disk, I/O error, store unreachable) is logged and counted
    (`checkpoint_failures`), and False returned: the job keeps training from where it is, and keeps its
    previous checkpoint.
    """
    path = checkpoint_blob(job_id, token, epoch)
    try:
        sha256 = blobs.write(path, state)
    except (OSError, StorageFullError, BlobStoreUnavailableError) as exc:
        logger.warning("job %s: checkpoint of epoch %d not written (%s); training goes on", job_id, epoch, exc)
        attempts.redis.incr(keys.checkpoint_failures())
        return False
    applied, previous = attempts.set_checkpoint(job_id, token, path=path, sha256=sha256, epoch=epoch)
    if not applied:
        blobs.delete(path)
        raise SupersededAttemptError(job_id, token)
    if previous and previous != path:
        try:
            blobs.delete(previous)
        except BlobStoreUnavailableError as exc:  # left for the orphan sweep
            logger.warning("job %s: previous checkpoint not deleted (%s)", job_id, exc)
    return True


def checkpoint_failures(redis: Redis) -> int:
    """Checkpoints that could not be written, by every worker, since the store began."""
    return int(redis.get(keys.checkpoint_failures()) or 0)


def load_checkpoint(redis: Redis, blobs: BlobStore, job_id: str) -> tuple[int, bytes] | None:
    """(epoch, state) of the job's last checkpoint; None when there is none or it is unreadable."""
    pointer = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in redis.hgetall(keys.job_checkpoint(job_id)).items()
    }
    if not pointer:
        return None
    try:
        return int(pointer["epoch"]), blobs.read(pointer["path"], pointer["sha256"])
    except (BlobError, KeyError, ValueError) as exc:
        logger.warning("job %s: checkpoint unusable (%s); starting from epoch 0", job_id, exc)
        return None


def drop_checkpoints(blobs: BlobStore, job_id: str) -> None:
    """Delete every checkpoint blob of a job that ended (of any attempt); with the store unreachable they
    are left for the orphan sweep."""
    try:
        for blob in blobs.list(checkpoint_prefix(job_id)):
            blobs.delete(blob.name)
    except BlobStoreUnavailableError as exc:
        logger.warning("job %s: checkpoints not deleted (%s)", job_id, exc)
