"""Job statuses, the transitions between them, and the one Lua move that keeps counters and indexes right.

Every script that changes a job's status (create, begin, worker writes, commit, cancel, re-queue, fail,
delete, and the recount of the indexes) embeds `MOVE_LUA` and calls its `move`. A move:

- checks the transition against `TRANSITIONS` (the same table, rendered to Lua);
- moves the job between the per-status counters of `keys.job_counts()` (with the per-owner queued and
  running counters), the running and active sets, and the per-status sorted sets (everyone's and the owner's);
- publishes `{"event": "status", "status": ..., "attempt": ...}` on `keys.job_events(job_id)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from enum import StrEnum

from worker import keys


class JobStatus(StrEnum):
    """Status of a training job (the values are the wire format)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    STALLED = "stalled"


JOB_STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.STALLED})
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

# Allowed moves; None as a source is creation, None as a target is deletion. Staying in a status is not a move.
# A stalled job's worker may still be alive (a long pause), so it may finish from `stalled` too.
TRANSITIONS: Mapping[JobStatus | None, frozenset[JobStatus | None]] = {
    None: frozenset({JobStatus.QUEUED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.STALLED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
    ),
    JobStatus.STALLED: frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
    ),
    JobStatus.SUCCEEDED: frozenset({None}),
    JobStatus.FAILED: frozenset({None}),
    JobStatus.CANCELED: frozenset({None}),
}


def _lua_text(text: str) -> str:
    return json.dumps(text)  # an ASCII JSON string literal is a Lua string literal


def _lua_key(build: Callable[..., str], *params: str) -> str:
    """A Lua expression building `build(*params)`, where `params` are Lua expressions."""
    text = build(*(f"\0{index}\0" for index in range(len(params))))
    pieces = re.split("\0([0-9])\0", text)
    parts = [params[int(piece)] if index % 2 else _lua_text(piece) for index, piece in enumerate(pieces)]
    return " .. ".join(part for part in parts if part != '""')


def _lua_set(statuses: frozenset[JobStatus | None]) -> str:
    return "{" + ", ".join(f"[{_lua_text(json.dumps(s.value))}] = true" for s in statuses if s) + "}"


def _lua_transitions() -> str:
    rows = []
    for old, targets in TRANSITIONS.items():
        source = "''" if old is None else _lua_text(json.dumps(old.value))
        rows.append(f"[{source}] = {{set = {_lua_set(targets)}, delete = {'true' if None in targets else 'false'}}}")
    return "{" + ", ".join(rows) + "}"


# Statuses are stored JSON-encoded ('"running"'), owners too ('"<hex>"' or 'null'). The job's key is passed
# as `job` (scripts pass KEYS[1]); the job id is the last ARGV of every script.
MOVE_LUA = f"""
local COUNTS = {_lua_text(keys.job_counts())}
local JOBS = {_lua_text(keys.jobs())}
local function jobs_of(owner) return {_lua_key(keys.jobs_of, "string.sub(owner, 2, -2)")} end
local ACTIVE = {_lua_set(frozenset(ACTIVE_STATUSES))}
local NEXT = {_lua_transitions()}
local function may_move(old, new)
  if old == new then return true end
  local row = NEXT[old or '']
  if not row then return false end
  if new == nil then return row.delete end
  return row.set[new] == true
end
local function by_status(status) return {_lua_key(keys.jobs_with_status, "string.sub(status, 2, -2)")} end
local function by_owner_status(owner, status)
  return {_lua_key(keys.jobs_with_status, "string.sub(status, 2, -2)", "string.sub(owner, 2, -2)")}
end
local function leave(job_id, owner, old)
  redis.call('HINCRBY', COUNTS, old, -1)
  redis.call('ZREM', by_status(old), job_id)
  if owner ~= 'null' then redis.call('ZREM', by_owner_status(owner, old), job_id) end
  if old == '"running"' then
    redis.call('SREM', {_lua_text(keys.jobs_running())}, job_id)
    redis.call('HINCRBY', COUNTS, 'running_of:' .. owner, -1)
  elseif old == '"queued"' then
    redis.call('HINCRBY', COUNTS, 'queued_of:' .. owner, -1)
  end
  if ACTIVE[old] then redis.call('SREM', {_lua_text(keys.jobs_active())}, job_id) end
end
local function enter(job_id, owner, new)
  local score = redis.call('ZSCORE', JOBS, job_id) or '0'
  redis.call('HINCRBY', COUNTS, new, 1)
  redis.call('ZADD', by_status(new), score, job_id)
  if owner ~= 'null' then redis.call('ZADD', by_owner_status(owner, new), score, job_id) end
  if new == '"running"' then
    redis.call('SADD', {_lua_text(keys.jobs_running())}, job_id)
    redis.call('HINCRBY', COUNTS, 'running_of:' .. owner, 1)
  elseif new == '"queued"' then
    redis.call('HINCRBY', COUNTS, 'queued_of:' .. owner, 1)
  end
  if ACTIVE[new] then redis.call('SADD', {_lua_text(keys.jobs_active())}, job_id) end
end
-- Move job `job_id` (hash `job`) from status `old` to `new` (nil: not yet created / being deleted).
-- Callers check may_move first, before any write of theirs. `quiet` skips the event (index rebuilds, and a
-- worker's admission: the attempt's begin announces it).
local function announce(job, job_id, status)
  local attempt = tonumber(redis.call('HGET', job, 'attempts') or '0') or 0
  redis.call('PUBLISH', {_lua_key(keys.job_events, "job_id")},
             cjson.encode({{event = 'status', status = string.sub(status, 2, -2), attempt = attempt}}))
end
local function move(job, job_id, old, new, quiet)
  if old == new then return end
  local owner = redis.call('HGET', job, 'owner') or 'null'
  if old then leave(job_id, owner, old) end
  if new then enter(job_id, owner, new) end
  if new and not quiet then announce(job, job_id, new) end
end
-- The status among the n field/value pairs ARGV[first..], or nil.
local function target(first, n)
  for i = first, first + 2 * n - 1, 2 do
    if ARGV[i] == 'status' then return ARGV[i + 1] end
  end
  return nil
end
-- HSET the n field/value pairs ARGV[first..] on KEYS[1] and move the job if they set a status.
-- Returns the status afterwards, or false (and writes nothing) when the move is not allowed.
local function set_fields(job_id, status, first, n)
  local new = target(first, n)
  if new and not may_move(status, new) then return false end
  for i = first, first + 2 * n - 1, 2 do
    if ARGV[i] ~= 'status' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  end
  if new then
    redis.call('HSET', KEYS[1], 'status', new)
    move(KEYS[1], job_id, status, new)
    return new
  end
  return status
end
"""
