"""Job state transitions as Lua scripts: the worker's writes are fenced by the attempt's token.

Every attempt to run a job INCRs the job's fence key and keeps the value as its token. A worker write
(progress, checkpoint, final status, the model) is applied only while the fence still holds that token
and the job is running, so an orphaned or superseded attempt can never commit. The API's transitions
(cancel, reaper) are conditional on the job's status and bump the fence when they end a job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from worker import keys

logger = logging.getLogger(__name__)

# The keys every status change updates, in the scripts' order (the active set last: KEYS[#KEYS]).
_COUNTERS = (keys.job_counts(), keys.jobs_running(), keys.jobs_active())

# Statuses are stored JSON-encoded, so the Lua scripts compare against '"running"' etc.
# Every status change also moves the job between the per-status counters (keys.job_counts, with the
# per-owner queued counters keys.queued_of), in or out of the running set (keys.jobs_running) and the active
# set (keys.jobs_active), in the same script, so /metrics, the per-key queue limit and the reaper never scan
# the jobs. The job id is always the last ARGV, the job record always KEYS[1], the active set the last KEYS.
_MOVE = """
local ACTIVE = {['"queued"'] = true, ['"running"'] = true, ['"stalled"'] = true}
local function move(counts, running, job_id, old, new)
  if old == new then return end
  if old then redis.call('HINCRBY', counts, old, -1) end
  redis.call('HINCRBY', counts, new, 1)
  if new == '"running"' then redis.call('SADD', running, job_id)
  elseif old == '"running"' then redis.call('SREM', running, job_id) end
  local was, is = old and ACTIVE[old], ACTIVE[new]
  if is and not was then redis.call('SADD', KEYS[#KEYS], job_id)
  elseif was and not is then redis.call('SREM', KEYS[#KEYS], job_id) end
  if old == '"queued"' or new == '"queued"' then
    local of = 'queued_of:' .. (redis.call('HGET', KEYS[1], 'owner') or 'null')
    if old == '"queued"' then redis.call('HINCRBY', counts, of, -1) end
    if new == '"queued"' then redis.call('HINCRBY', counts, of, 1) end
  end
end
local job_id = ARGV[#ARGV]
-- HSET the n field/value pairs ARGV[first..] on the job; a `status` field moves the counters too.
local function set_fields(counts, running, status, first, n)
  for i = first, first + 2 * n - 1, 2 do
    if ARGV[i] == 'status' then
      move(counts, running, job_id, status, ARGV[i + 1])
      status = ARGV[i + 1]
    end
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  return status
end
"""

# KEYS: job, fence, counts, running, active. ARGV: started_at, worker, heartbeat_interval, job_id.
_BEGIN = _MOVE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
if status == '"succeeded"' or status == '"failed"' or status == '"canceled"' then return {0, status} end
local token = redis.call('INCR', KEYS[2])
move(KEYS[3], KEYS[4], job_id, status, '"running"')
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') + 1
redis.call('HSET', KEYS[1], 'status', '"running"', 'attempts', tostring(attempts), 'error', 'null',
           'worker', ARGV[2], 'heartbeat_interval', ARGV[3])
local started = redis.call('HGET', KEYS[1], 'started_at')
if not started or started == 'null' then redis.call('HSET', KEYS[1], 'started_at', ARGV[1]) end
return {token, status}
"""

# The attempt's guard: its token is still the job's fence (KEYS[2]) and the job (KEYS[1]) is still running
# or stalled; otherwise the script changes nothing and answers 0. ARGV[1] is the token.
_FENCED = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"running"' and status ~= '"stalled"' then return 0 end
"""

# KEYS: job, fence, history, checkpoint, counts, running, active.
# ARGV: token, trim, drop_checkpoint, n_fields, fields..., entries..., job_id.
_WRITE = _MOVE + _FENCED + """
local before = redis.call('LLEN', KEYS[3])
local trim = tonumber(ARGV[2])
if trim == 0 then redis.call('DEL', KEYS[3])
elseif trim > 0 then redis.call('LTRIM', KEYS[3], 0, trim - 1) end
local n = tonumber(ARGV[4])
status = set_fields(KEYS[5], KEYS[6], status, 5, n)
for i = 5 + 2 * n, #ARGV - 1 do redis.call('RPUSH', KEYS[3], ARGV[i]) end
local added = redis.call('LLEN', KEYS[3]) - before
if added ~= 0 then redis.call('HINCRBY', KEYS[5], 'epochs', added) end
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
# and name), models_named (all owners), counts, running, active.
# ARGV: token, model_id, meta, score, has_owner, n_fields, fields..., owner (JSON), job_id.
_COMMIT_MODEL = _MOVE + _FENCED + """
local version = redis.call('INCR', KEYS[8])
redis.call('HSET', KEYS[4], 'meta', ARGV[3], 'version', version, 'owner', ARGV[#ARGV - 1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[6], ARGV[4], ARGV[2]) end
redis.call('ZADD', KEYS[7], version, ARGV[2])
redis.call('ZADD', KEYS[9], ARGV[4], ARGV[2])
set_fields(KEYS[10], KEYS[11], status, 7, tonumber(ARGV[6]))
local old = redis.call('HGET', KEYS[3], 'path') or ''
redis.call('DEL', KEYS[3])
return {version, old}
"""

# KEYS: job, fence, counts, running, active.
# ARGV: allowed statuses (comma separated JSON texts), bump_fence, n_fields, fields..., job_id.
_TRANSITION = _MOVE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return 0 end
if ARGV[2] == '1' then redis.call('INCR', KEYS[2]) end
set_fields(KEYS[3], KEYS[4], status, 4, tonumber(ARGV[3]))
return 1
"""

# KEYS: job, stop, fence, counts, running, active. ARGV: finished_at, job_id.
# Queued/stalled -> canceled now; running -> stop flag.
_CANCEL = _MOVE + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status == '"queued"' or status == '"stalled"' then
  redis.call('INCR', KEYS[3])
  redis.call('SET', KEYS[2], '1')
  move(KEYS[4], KEYS[5], job_id, status, '"canceled"')
  redis.call('HSET', KEYS[1], 'status', '"canceled"', 'finished_at', ARGV[1])
  return 'canceled'
end
if status == '"running"' then
  redis.call('SET', KEYS[2], '1')
  return 'stopping'
end
return status
"""


def publish_status(redis: Redis, job_id: str) -> None:
    """Announce the job's current status and attempt on its event channel (`keys.job_events`).

    Best effort: the job record stays the source of truth, and event streams re-read it.
    """
    try:
        status, attempt = redis.hmget(keys.job(job_id), ["status", "attempts"])
        if status is None:
            return
        message = {"event": "status", "status": json.loads(status), "attempt": int(json.loads(attempt or b"0"))}
        redis.publish(keys.job_events(job_id), json.dumps(message))
    except RedisError as exc:
        logger.warning("job %s: status event not published: %s", job_id, exc)


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

    # --- the worker's side (fenced) ------------------------------------------------------------------
    def begin(self, job_id: str, *, started_at: str, worker: str | None, heartbeat_interval: int) -> Begin:
        """Take a fencing token and mark the job running; token 0 if the job already ended, -1 if gone."""
        token, previous = self._begin(
            keys=[
                keys.job(job_id),
                keys.job_fence(job_id),
                *_COUNTERS,
            ],
            args=[json.dumps(started_at), json.dumps(worker), json.dumps(heartbeat_interval), job_id],
        )
        if int(token) > 0:
            publish_status(self.redis, job_id)
        return Begin(int(token), json.loads(previous) if previous else None)

    def is_current(self, job_id: str, token: int) -> bool:
        """Whether `token` is still the job's fencing token."""
        raw = self.redis.get(keys.job_fence(job_id))
        return raw is not None and int(raw) == token

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
                *_COUNTERS,
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
        if "status" in fields:
            publish_status(self.redis, job_id)
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
                *_COUNTERS,
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
        if "status" in job_fields:
            publish_status(self.redis, job_id)
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
                *_COUNTERS,
            ],
            args=[
                ",".join(json.dumps(status) for status in allowed),
                "1" if bump_fence else "0",
                str(len(fields)),
                *_pairs(fields),
                job_id,
            ],
        )
        if result and "status" in fields:
            publish_status(self.redis, job_id)
        return bool(result)

    def cancel(self, job_id: str, *, finished_at: str) -> str:
        """'canceled' (was queued/stalled), 'stopping' (running: stop flag set), else the status or ''."""
        result = self._cancel(
            keys=[
                keys.job(job_id),
                keys.job_stop(job_id),
                keys.job_fence(job_id),
                *_COUNTERS,
            ],
            args=[json.dumps(finished_at), job_id],
        )
        text = _text(result)
        if text == "canceled":
            publish_status(self.redis, job_id)
        return text if text in ("canceled", "stopping", "") else str(json.loads(text))

    def stop_requested(self, job_id: str) -> bool:
        """Whether someone asked the job to stop."""
        return bool(self.redis.exists(keys.job_stop(job_id)))
