"""Job state transitions as Lua scripts: the worker's writes are fenced by the attempt's token.

Every attempt to run a job INCRs the job's fence key and keeps the value as its token. A worker write
(progress, checkpoint, final status, the model) is applied only while the fence still holds that token
and the job is running, so an orphaned or superseded attempt can never commit. The API's transitions
(cancel, reaper) are conditional on the job's status and bump the fence when they end a job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis import Redis

from worker import keys
from worker.jobstate import MOVE_LUA, TERMINAL_STATUSES, JobStatus
from worker.records import utc_now
from worker.usage import USAGE_LUA

_TERMINAL = " or ".join(f"status == {json.dumps(json.dumps(s.value))}" for s in TERMINAL_STATUSES)

# KEYS: job, fence. ARGV: started_at, worker, heartbeat_interval, job_id.
_BEGIN = MOVE_LUA + """
local job_id = ARGV[#ARGV]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
if """ + _TERMINAL + """ then return {0, status} end
local token = redis.call('INCR', KEYS[2])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') + 1
redis.call('HSET', KEYS[1], 'status', '"running"', 'attempts', tostring(attempts), 'error', 'null',
           'worker', ARGV[2], 'heartbeat_interval', ARGV[3])
local started = redis.call('HGET', KEYS[1], 'started_at')
if not started or started == 'null' then redis.call('HSET', KEYS[1], 'started_at', ARGV[1]) end
move(KEYS[1], job_id, status, '"running"')
if status == '"running"' then announce(KEYS[1], job_id, status) end  -- a new attempt of a running job
return {token, status}
"""

# The attempt's guard: its token is still the job's fence (KEYS[2]) and the job (KEYS[1]) is still running
# or stalled; otherwise the script changes nothing and answers 0. ARGV[1] is the token.
_FENCED = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"running"' and status ~= '"stalled"' then return 0 end
"""

# KEYS: job, fence, history, checkpoint.
# ARGV: token, trim, drop_checkpoint, n_fields, fields..., entries..., job_id.
_WRITE = MOVE_LUA + _FENCED + """
local n = tonumber(ARGV[4])
if not set_fields(ARGV[#ARGV], status, 5, n) then return 0 end
local before = redis.call('LLEN', KEYS[3])
local trim = tonumber(ARGV[2])
if trim == 0 then redis.call('DEL', KEYS[3])
elseif trim > 0 then redis.call('LTRIM', KEYS[3], 0, trim - 1) end
for i = 5 + 2 * n, #ARGV - 1 do redis.call('RPUSH', KEYS[3], ARGV[i]) end
local added = redis.call('LLEN', KEYS[3]) - before
if added ~= 0 then redis.call('HINCRBY', COUNTS, 'epochs', added) end
local old = ''
if ARGV[3] == '1' then
  old = redis.call('HGET', KEYS[4], 'path') or ''
  redis.call('DEL', KEYS[4])
end
return {1, old}
"""

# KEYS: job, fence, checkpoint. ARGV: token, path, sha256, epoch.
_CHECKPOINT = _FENCED + """
local old = redis.call('HGET', KEYS[3], 'path') or ''
local older = redis.call('HGET', KEYS[3], 'previous') or ''
redis.call('HSET', KEYS[3], 'path', ARGV[2], 'sha256', ARGV[3], 'epoch', ARGV[4], 'token', ARGV[1],
           'previous', old)
return {1, older}
"""

# KEYS: job, fence, checkpoint, model, models, models_of, versions (of owner and name), counter (of owner
# and name), models_named (all owners).
# ARGV: token, model_id, meta, score, has_owner, n_fields, fields..., owner (JSON), job_id.
# The model counts towards its owner's usage even past a quota (the job was accepted: its work is kept).
_COMMIT_MODEL = MOVE_LUA + USAGE_LUA + _FENCED + """
if not set_fields(ARGV[#ARGV], status, 7, tonumber(ARGV[6])) then return {0, ''} end
local version = redis.call('INCR', KEYS[8])
redis.call('HSET', KEYS[4], 'meta', ARGV[3], 'version', version, 'owner', ARGV[#ARGV - 1])
if redis.call('HGET', USAGE, 'built') == USAGE_VERSION then  -- else a later recount counts this record
  usage_add(ARGV[#ARGV - 1], 'bytes', tonumber(cjson.decode(ARGV[3]).size_bytes) or 0)
  usage_add(ARGV[#ARGV - 1], 'models', 1)
end
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[6], ARGV[4], ARGV[2]) end
redis.call('ZADD', KEYS[7], version, ARGV[2])
redis.call('ZADD', KEYS[9], ARGV[4], ARGV[2])
local old = redis.call('HGET', KEYS[3], 'path') or ''
redis.call('DEL', KEYS[3])
return {version, old}
"""

# KEYS: job, fence.
# ARGV: allowed statuses (comma separated JSON texts), bump_fence, n_fields, fields..., job_id.
_TRANSITION = MOVE_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return 0 end
local wanted = target(4, tonumber(ARGV[3]))
if wanted and not may_move(status, wanted) then return 0 end
if ARGV[2] == '1' then redis.call('INCR', KEYS[2]) end
set_fields(ARGV[#ARGV], status, 4, tonumber(ARGV[3]))
return 1
"""

# KEYS: job. ARGV: limit, job_id. A queued job starts running only while its owner has fewer than `limit`
# jobs running; the move happens here so two workers cannot both take the last slot. 1: run it, 0: not now.
_ADMIT = MOVE_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"queued"' then return 1 end
local owner = redis.call('HGET', KEYS[1], 'owner') or 'null'
local running = tonumber(redis.call('HGET', COUNTS, 'running_of:' .. owner) or '0')
if running >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'status', '"running"')
move(KEYS[1], ARGV[#ARGV], status, '"running"', true)
return 1
"""

# KEYS: job, stop, fence. ARGV: finished_at, job_id.
# Queued/stalled -> canceled now; running -> stop flag, announced on the channel of the same name.
_CANCEL = MOVE_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status == '"queued"' or status == '"stalled"' then
  redis.call('INCR', KEYS[3])
  redis.call('SET', KEYS[2], '1')
  redis.call('HSET', KEYS[1], 'status', '"canceled"', 'finished_at', ARGV[1])
  move(KEYS[1], ARGV[#ARGV], status, '"canceled"')
  return 'canceled'
end
if status == '"running"' then
  redis.call('SET', KEYS[2], '1')
  redis.call('PUBLISH', KEYS[2], '1')
  return 'stopping'
end
return status
"""


class SupersededAttemptError(RuntimeError):
    """This attempt's fencing token is no longer current (another attempt took over, or the job ended)."""

    def __init__(self, job_id: str, token: int) -> None:
        super().__init__(f"job {job_id}: attempt with token {token} was superseded")
        self.job_id = job_id
        self.token = token


def _pairs(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        flat += [name, json.dumps(value)]
    return flat


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Begin:
    """Outcome of starting an attempt: `token` > 0 when the attempt may run."""

    token: int
    previous_status: str | None


class Attempts:
    """Fenced and status-conditional writes to job records."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._begin = redis.register_script(_BEGIN)
        self._write = redis.register_script(_WRITE)
        self._checkpoint = redis.register_script(_CHECKPOINT)
        self._commit = redis.register_script(_COMMIT_MODEL)
        self._transition = redis.register_script(_TRANSITION)
        self._cancel = redis.register_script(_CANCEL)
        self._admit = redis.register_script(_ADMIT)

    # --- the worker's side (fenced) ------------------------------------------------------------------
    def begin(self, job_id: str, *, started_at: str, worker: str | None, heartbeat_interval: int) -> Begin:
        """Take a fencing token and mark the job running; token 0 if the job already ended, -1 if gone."""
        token, previous = self._begin(
            keys=[
                keys.job(job_id),
                keys.job_fence(job_id),
            ],
            args=[json.dumps(started_at), json.dumps(worker), json.dumps(heartbeat_interval), job_id],
        )
        return Begin(int(token), json.loads(previous) if previous else None)

    def write(
        self,
        job_id: str,
        token: int,
        fields: dict[str, Any],
        history: list[dict[str, Any]] | None = None,
        *,
        trim_history: int | None = None,
        drop_checkpoint: bool = False,
    ) -> tuple[bool, str]:
        """Set job fields and append history entries if `token` is current; (applied, old checkpoint path)."""
        flat = _pairs(fields)
        entries = [json.dumps(entry) for entry in history or []]
        result = self._write(
            keys=[
                keys.job(job_id),
                keys.job_fence(job_id),
                keys.job_history(job_id),
                keys.job_checkpoint(job_id),
            ],
            args=[
                str(token),
                str(-1 if trim_history is None else trim_history),
                "1" if drop_checkpoint else "0",
                str(len(fields)),
                *flat,
                *entries,
                job_id,
            ],
        )
        if not result:
            return False, ""
        return True, _text(result[1])

    def set_checkpoint(
        self, job_id: str, token: int, *, path: str, sha256: str, epoch: int
    ) -> tuple[bool, str]:
        """Point the job's checkpoint at a new blob if `token` is current; (applied, blob path now unused).

        The previous blob is kept one generation longer: if Redis loses its last writes (AOF fsync'd every
        second), the pointer it rolls back to still names an existing blob.
        """
        result = self._checkpoint(
            keys=[keys.job(job_id), keys.job_fence(job_id), keys.job_checkpoint(job_id)],
            args=[str(token), path, sha256, str(epoch)],
        )
        if not result:
            return False, ""
        return True, _text(result[1])

    def commit_model(
        self,
        job_id: str,
        token: int,
        *,
        model_id: str,
        name: str,
        owner: str | None,
        meta: dict[str, Any],
        score: float,
        job_fields: dict[str, Any],
    ) -> tuple[int, str]:
        """Save the model record (next version of the lineage (owner, name)) and finish the job, if `token`
        is current.

        Returns (version, previous checkpoint path); version 0 when the attempt was superseded.
        """
        result = self._commit(
            keys=[
                keys.job(job_id),
                keys.job_fence(job_id),
                keys.job_checkpoint(job_id),
                keys.model(model_id),
                keys.models(),
                keys.models_of(owner if owner is not None else ""),
                keys.model_versions(owner, name),
                keys.model_version_counter(owner, name),
                keys.models_named(name),
            ],
            args=[
                str(token),
                model_id,
                json.dumps(meta),
                repr(score),
                "1" if owner is not None else "0",
                str(len(job_fields)),
                *_pairs(job_fields),
                json.dumps(owner),
                job_id,
            ],
        )
        if not result:
            return 0, ""
        return int(result[0]), _text(result[1])

    # --- the API's side (status-conditional) ---------------------------------------------------------
    def transition(
        self, job_id: str, *, allowed: tuple[str, ...], fields: dict[str, Any], bump_fence: bool = False
    ) -> bool:
        """Set fields if the job's status is one of `allowed`; bump the fence to disown running attempts."""
        result = self._transition(
            keys=[
                keys.job(job_id),
                keys.job_fence(job_id),
            ],
            args=[
                ",".join(json.dumps(status) for status in allowed),
                "1" if bump_fence else "0",
                str(len(fields)),
                *_pairs(fields),
                job_id,
            ],
        )
        return bool(result)

    def admit(self, job_id: str, *, running_limit: int) -> bool:
        """Whether a worker may start the job now: its owner runs fewer than `running_limit` jobs (a queued
        job is marked running at once, taking the slot)."""
        return bool(self._admit(keys=[keys.job(job_id)], args=[str(running_limit), job_id]))

    def requeue_or_fail(self, job_id: str, *, requeue: bool, reason: str) -> JobStatus | None:
        """A running or stalled job whose attempt died: back to `queued` (RQ re-runs it) or `failed` with
        `reason`; returns the new status, None when the job was no longer running or stalled."""
        alive = (JobStatus.RUNNING, JobStatus.STALLED)
        if requeue:
            if self.transition(job_id, allowed=alive, fields={"status": JobStatus.QUEUED}):
                return JobStatus.QUEUED
            return None
        failed = {"status": JobStatus.FAILED, "error": reason, "finished_at": utc_now()}
        if self.transition(job_id, allowed=alive, fields=failed, bump_fence=True):
            return JobStatus.FAILED
        return None

    def cancel(self, job_id: str, *, finished_at: str) -> str:
        """'canceled' (was queued/stalled), 'stopping' (running: stop flag set), else the status or ''."""
        result = self._cancel(
            keys=[
                keys.job(job_id),
                keys.job_stop(job_id),
                keys.job_fence(job_id),
            ],
            args=[json.dumps(finished_at), job_id],
        )
        text = _text(result)
        return text if text in ("canceled", "stopping", "") else str(json.loads(text))

    def stop_requested(self, job_id: str) -> bool:
        """Whether someone asked the job to stop."""
        return bool(self.redis.exists(keys.job_stop(job_id)))
