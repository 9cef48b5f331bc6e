"""Per-owner storage quotas: the counters of stored bytes, datasets and models, kept in one Redis hash.

The store changes the counters in the same Lua script as the records they count (a dataset is added only
if it fits, checked and counted in one step; a deleted record gives its share back), and the worker's model
commit adds its model. `USAGE_LUA` is what those scripts embed: `ensure_usage()` recounts the hash from the
records once per Redis dataset and counter version (a store written before the counters existed, or a
flushed one), so every later increment starts from an exact count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from worker import keys


def _parts(key: str) -> tuple[str, str]:
    prefix, _, suffix = key.partition("\0")
    return prefix, suffix


_VERSION = "1"
_DATASET = _parts(keys.dataset("\0"))
_MODEL = _parts(keys.model("\0"))

USAGE_LUA = f"""
local USAGE = {json.dumps(keys.usage())}
local USAGE_VERSION = {json.dumps(_VERSION)}
local function usage_add(owner, kind, n)
  redis.call('HINCRBY', USAGE, kind .. '_of:' .. owner, string.format('%d', n))
end
local function usage_get(owner, kind)
  return tonumber(redis.call('HGET', USAGE, kind .. '_of:' .. owner) or '0')
end
local function ensure_usage()
  if redis.call('HGET', USAGE, 'built') == USAGE_VERSION then return end
  redis.call('DEL', USAGE)
  for _, id in ipairs(redis.call('ZRANGE', {json.dumps(keys.datasets())}, 0, -1)) do
    local raw = redis.call('GET', {json.dumps(_DATASET[0])} .. id .. {json.dumps(_DATASET[1])})
    if raw then
      local record = cjson.decode(raw)
      local owner = 'null'
      if type(record.owner) == 'string' then owner = '"' .. record.owner .. '"' end
      usage_add(owner, 'bytes', tonumber(record.size_bytes) or 0)
      usage_add(owner, 'datasets', 1)
    end
  end
  for _, id in ipairs(redis.call('ZRANGE', {json.dumps(keys.models())}, 0, -1)) do
    local key = {json.dumps(_MODEL[0])} .. id .. {json.dumps(_MODEL[1])}
    local meta = redis.call('HGET', key, 'meta')
    if meta then
      usage_add(redis.call('HGET', key, 'owner') or 'null', 'bytes', tonumber(cjson.decode(meta).size_bytes) or 0)
      usage_add(redis.call('HGET', key, 'owner') or 'null', 'models', 1)
    end
  end
  redis.call('HSET', USAGE, 'built', USAGE_VERSION)
end
"""


@dataclass(frozen=True)
class Quota:
    """Most an owner may store: blob bytes of datasets and models, datasets, models (0: no limit)."""

    max_bytes: int = 0
    max_datasets: int = 0
    max_models: int = 0


@dataclass(frozen=True)
class Usage:
    """What an owner stores now, and `pending_models`: the models its queued and running jobs will add."""

    bytes: int
    datasets: int
    models: int
    pending_models: int


class QuotaExceededError(RuntimeError):
    """Storing this would take an owner past a quota: `resource` is `bytes`, `datasets` or `models`."""

    def __init__(self, resource: str, value: int, maximum: int) -> None:
        super().__init__(f"{resource}: {value} exceeds the quota of {maximum}")
        self.resource = resource
        self.value = value
        self.maximum = maximum
