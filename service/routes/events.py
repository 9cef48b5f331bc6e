"""/v1/jobs/{id}/events: a job's progress and status changes pushed as Server-Sent Events.

The stored job record is the source of truth: a stream replays the stored history first, then follows the
workers' pub/sub messages (`worker.subscribe_job_events`), and re-reads the record whenever a message is missing,
so a client sees every epoch once and in order even when Redis drops a message.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Header
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from service.deps import AppState, State, job_or_404
from service.errors import responses
from service.routes.jobs import job_public
from service.schemas import ProgressPublic
from worker import TERMINAL_STATUSES, JobRecord, subscribe_job_events

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

HEARTBEAT_SECONDS = 15  # a comment line at least this often keeps proxies from closing an idle stream
RECHECK_SECONDS = 2.0  # without any message for this long, the stream re-reads the job record


@dataclass(frozen=True)
class Message:
    """A worker's pub/sub message, decoded: `progress` (epoch, the progress object as event data) or `status`."""

    event: str
    epoch: int = 0
    data: str = ""
    status: str = ""
    attempt: int = 0


@functools.lru_cache(maxsize=4096)
def decode_message(raw: bytes) -> Message:
    """Decode (and validate) a message once per API process, whatever the number of streams it goes to."""
    data = json.loads(raw)
    if data.get("event") == "progress":
        return Message("progress", epoch=int(data["epoch"]), data=progress_data(data["progress"]))
    if data.get("event") == "status":
        return Message("status", status=str(data["status"]), attempt=int(data.get("attempt") or 0))
    return Message(str(data.get("event")))


def progress_data(progress: dict[str, Any]) -> str:
    """The data of a `progress` event: the object shaped as the job's `progress` field."""
    return ProgressPublic.model_validate(progress).model_dump_json()


class JobStream:
    """What one client has been sent: the last epoch and the last status; turns records and messages into
    the events still owed, never repeating an epoch nor going back."""

    def __init__(self, after: int) -> None:
        self.last_epoch = after
        self.status: tuple[str, int] | None = None

    def catch_up(self, record: JobRecord) -> list[ServerSentEvent]:
        """Progress events for the stored epochs after the last one sent."""
        events = []
        for entry in record.history:
            epoch = int(entry["epoch"])
            if epoch == self.last_epoch + 1:
                events.append(self.progress(epoch, progress_data(entry)))
        return events

    def progress(self, epoch: int, data: str) -> ServerSentEvent:
        self.last_epoch = epoch
        return ServerSentEvent(data, event="progress", id=str(epoch))

    def status_change(self, status: str, attempt: int) -> list[ServerSentEvent]:
        """A status event unless the client was already told this status of this attempt."""
        if self.status == (status, attempt):
            return []
        self.status = (status, attempt)
        return [ServerSentEvent(json.dumps({"status": status, "attempt": attempt}), event="status")]

    def message(self, message: Message | None, record: JobRecord | None) -> list[ServerSentEvent]:
        """Events for one pub/sub message (None: none came) after catching up with `record` (re-read)."""
        events = [] if record is None else self.catch_up(record)
        if message is None:
            return events
        if message.event == "progress" and message.epoch == self.last_epoch + 1:
            events.append(self.progress(message.epoch, message.data))
        elif message.event == "status":
            events += self.status_change(message.status, message.attempt)
        return events

    def needs_record(self, message: Message) -> bool:
        """Whether a message shows a gap (a later epoch than the next) or a status change."""
        if message.event == "progress":
            return message.epoch > self.last_epoch + 1
        return True


def _end(state: AppState, record: JobRecord) -> ServerSentEvent:
    return ServerSentEvent(job_public(state, record).model_dump_json(), event="end")


async def _job_events(state: State, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    """Replay, then follow, until the job ends; a stream cut by Redis ends early (the client resumes)."""
    settings = state.settings
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.redis_timeout)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    stream = JobStream(after)
    clock = time.monotonic
    try:
        await subscribe_job_events(pubsub, job_id)  # before reading the record: nothing falls in between
        record = await run_in_threadpool(state.store.get_job, job_id)
        events = [] if record is None else stream.status_change(record.status, record.attempts)
        read_at = clock()
        while record is not None:
            for event in events + stream.catch_up(record):
                yield event
            if record.status in TERMINAL_STATUSES:
                for event in stream.status_change(record.status, record.attempts):
                    yield event
                yield _end(state, record)
                return
            raw = await pubsub.get_message(timeout=RECHECK_SECONDS)
            data = None if raw is None else decode_message(raw["data"])
            if data is None or stream.needs_record(data) or clock() - read_at >= RECHECK_SECONDS:
                record = await run_in_threadpool(state.store.get_job, job_id)
                read_at = clock()
                if record is None:
                    return
                events = stream.message(data, record)
                if data is None:
                    events += stream.status_change(record.status, record.attempts)
            else:
                events = stream.message(data, None)
    except RedisError as exc:
        logger.warning("job %s: event stream cut: %s", job_id, exc)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


@router.get(
    "/{job_id}/events",
    summary="Follow a job's events",
    response_class=EventSourceResponse,
    responses={
        **responses(401, 404, 422, 503),
        200: {"content": {"text/event-stream": {}}, "description": "The job's events, then `end`."},
    },
)
async def stream_job_events(
    record: Annotated[JobRecord, Depends(job_or_404)],
    state: State,
    last_event_id: Annotated[
        int,
        Header(ge=0, le=1_000_000_000, description="Resume after this epoch (the `id` of the last event seen)."),
    ] = 0,
) -> EventSourceResponse:
    """Server-Sent Events: `progress` per epoch (`id` = the epoch), `status` on each status change, and a last
    `end` with the final job record; the stored history is replayed first (after `Last-Event-ID`)."""
    events = _job_events(state, record.id, last_event_id)
    return EventSourceResponse(events, ping=HEARTBEAT_SECONDS)
