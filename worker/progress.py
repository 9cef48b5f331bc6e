"""Turns the engine's per-epoch metrics into the progress and history the API shows, rate-limited."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.asyncio.client import PubSub as AsyncPubSub
from redis.client import PubSub
from redis.exceptions import RedisError

from worker import keys
from worker.attempts import Attempts, SupersededAttemptError
from worker.records import utc_now

logger = logging.getLogger(__name__)


def publish_progress(redis: Redis, job_id: str, reported: list[dict[str, Any]]) -> None:
    """Announce reported epochs (each the job's `progress` object of that epoch) on the job's event channel.

    Best effort: the stored history stays the source of truth; event streams fill gaps from it.
    """
    channel = keys.job_events(job_id)
    try:
        with redis.pipeline(transaction=False) as pipe:
            for progress in reported:
                message = {"event": "progress", "epoch": progress["epoch"], "progress": progress}
                pipe.publish(channel, json.dumps(message))
            pipe.execute()
    except RedisError as exc:
        logger.warning("job %s: progress events not published: %s", job_id, exc)


async def subscribe_job_events(pubsub: AsyncPubSub, job_id: str) -> None:
    """Subscribe an asyncio pub/sub connection to a job's events (JSON messages: `{"event": "progress",
    "epoch", "progress"}` per stored epoch, `{"event": "status", "status", "attempt"}` per status change)."""
    await pubsub.subscribe(keys.job_events(job_id))


class StopListener:
    """Whether someone asked a running job to stop, answered at every epoch boundary without a round trip.

    It subscribes to the job's stop channel (the cancel script publishes there when it sets the stop flag),
    then reads the flag once (a stop requested before the subscription). Without a subscription (it could
    not be made or broke) every call asks Redis for the flag.
    """

    def __init__(self, attempts: Attempts, job_id: str, *, subscribe_timeout: float = 5.0) -> None:
        self.attempts = attempts
        self.job_id = job_id
        self.pubsub: PubSub | None = None
        try:
            self.pubsub = self._subscribe(subscribe_timeout)
        except RedisError as exc:
            logger.warning("job %s: stop channel not subscribed (%s); asking for the flag every epoch", job_id, exc)
        self.requested = attempts.stop_requested(job_id)

    def _subscribe(self, timeout: float) -> PubSub | None:
        pubsub: PubSub = self.attempts.redis.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(keys.job_stop(self.job_id))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and message["type"] == "subscribe":
                    return pubsub
        except BaseException:
            pubsub.close()
            raise
        pubsub.close()
        logger.warning("job %s: stop channel not confirmed; asking for the flag every epoch", self.job_id)
        return None

    def __call__(self) -> bool:
        """Whether a stop was requested (it stays requested)."""
        if self.requested:
            return True
        if self.pubsub is None:
            self.requested = self.attempts.stop_requested(self.job_id)
            return self.requested
        try:
            while (message := self.pubsub.get_message(timeout=0.0)) is not None:
                self.requested = self.requested or message["type"] == "message"
        except RedisError as exc:
            logger.warning("job %s: stop channel lost (%s); asking for the flag every epoch", self.job_id, exc)
            self.close()
            self.requested = self.attempts.stop_requested(self.job_id)
        return self.requested

    def close(self) -> None:
        """Unsubscribe (the connection goes back to the pool)."""
        if self.pubsub is not None:
            with contextlib.suppress(RedisError):
                self.pubsub.close()
            self.pubsub = None


def eta_seconds(epoch: int, epochs: int, seconds_per_epoch: float | None) -> float | None:
    """Estimated seconds until the last of `epochs` ends, `epoch` done: the epochs left times one's seconds.

    None when the seconds per epoch are not known yet.
    """
    if seconds_per_epoch is None:
        return None
    return round(max(epochs - epoch, 0) * seconds_per_epoch, 3)


class ProgressReporter:
    """Buffers history entries and writes progress at most every `min_interval` seconds (always the last).

    Writes are fenced by the attempt's token; a rejected write raises `SupersededAttemptError`. The first
    write of an attempt trims the stored history to the epoch the attempt started from (a resumed run
    re-does the epochs after its checkpoint).
    """

    def __init__(
        self,
        attempts: Attempts,
        job_id: str,
        token: int,
        *,
        start_epoch: int,
        min_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.job_id = job_id
        self.token = token
        self.min_interval = min_interval
        self.clock = clock
        self.start_epoch = start_epoch
        self.started = clock()
        self.last_write: float | None = None
        self.pending: list[dict[str, Any]] = []
        self.reported: list[dict[str, Any]] = []  # the progress object of each pending epoch, to publish
        self.progress: dict[str, Any] | None = None
        self.trimmed = False
        self.writes = 0

    def epoch(self, metrics: dict[str, Any], *, final: bool) -> None:
        """Record one finished epoch (`EpochMetrics.to_dict()`); write if due or `final`."""
        self.pending.append(metrics)
        self.progress = self._progress(metrics, final=final)
        self.reported.append(self.progress)
        now = self.clock()
        if final or self.last_write is None or now - self.last_write >= self.min_interval:
            self.flush()

    def _progress(self, metrics: dict[str, Any], *, final: bool) -> dict[str, Any]:
        epoch = int(metrics["epoch"])
        epochs = int(metrics["epochs"])
        done = epoch - self.start_epoch
        elapsed = self.clock() - self.started
        eta = 0.0 if final else eta_seconds(epoch, epochs, elapsed / done if done > 0 else None)
        return {
            "epoch": epoch,
            "epochs": epochs,
            "train_loss": metrics.get("train_loss"),
            "train_accuracy": metrics.get("train_accuracy"),
            "validation_loss": metrics.get("validation_loss"),
            "validation_accuracy": metrics.get("validation_accuracy"),
            "learning_rate": metrics.get("learning_rate"),
            "seconds": metrics.get("seconds"),
            "samples_per_second": metrics.get("samples_per_second"),
            "eta_seconds": eta,
            "updated_at": utc_now(),
        }

    def flush(self, **fields: Any) -> None:
        """Write the buffered history, the latest progress and any extra `fields` (fenced)."""
        values = dict(fields)
        if self.progress is not None:
            values.setdefault("progress", self.progress)
        if not values and not self.pending and self.trimmed:
            return
        applied, _ = self.attempts.write(
            self.job_id,
            self.token,
            values,
            self.pending,
            trim_history=None if self.trimmed else self.start_epoch,
        )
        if not applied:
            raise SupersededAttemptError(self.job_id, self.token)
        self.trimmed = True
        self.pending = []
        if self.reported:
            publish_progress(self.attempts.redis, self.job_id, self.reported)
            self.reported = []
        self.last_write = self.clock()
        self.writes += 1
