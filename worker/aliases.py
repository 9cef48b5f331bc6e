"""Aliases of a model lineage (`name@champion`): a movable pointer to one version, with its history.

A model reference is a model id, a name (the lineage's latest version) or `name@alias`. Aliases belong to
the lineage (owner, name); every move is appended to the lineage's alias history with who moved it (the
caller's key id, a sha256 of the key, never the key) and when.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from worker import keys
from worker.records import utc_now

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_MAX_LENGTH = 64
"""Model names and aliases: letters, digits, `-`, `_`, `.` (not first); at most 64 characters."""
_NAME = re.compile(NAME_PATTERN)

SEPARATOR = "@"


def split_ref(ref: str) -> tuple[str, str | None]:
    """`name@alias` -> (name, alias); anything else -> (ref, None)."""
    name, sep, alias = ref.partition(SEPARATOR)
    return (name, alias) if sep else (ref, None)


def valid_name(value: str) -> bool:
    """Whether `value` is a valid model name or alias."""
    return len(value) <= NAME_MAX_LENGTH and _NAME.fullmatch(value) is not None


def valid_ref(value: str) -> bool:
    """Whether `value` has the shape of a model name or `name@alias` (ids are checked by `is_id`)."""
    name, alias = split_ref(value)
    return valid_name(name) and (alias is None or valid_name(alias))


@dataclass(frozen=True)
class AliasRecord:
    """Where an alias points now."""

    alias: str
    version: int
    model_id: str
    updated_at: str
    updated_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


class AliasConflictError(RuntimeError):
    """The alias moved since the caller looked at it (a guarded promotion raced another move)."""

    def __init__(self, alias: str, expected: int | None, actual: int | None) -> None:
        super().__init__(f"alias {alias!r} moved meanwhile: expected version {expected}, found {actual}")
        self.alias = alias
        self.expected = expected
        self.actual = actual


_UNCHECKED: Any = object()


class Aliases:
    """The aliases of every lineage, in Redis (see `keys.model_aliases`, `keys.model_alias_history`)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def get(self, owner: str | None, name: str, alias: str) -> AliasRecord | None:
        """Where `alias` of the lineage points, or None."""
        raw = self.redis.hget(keys.model_aliases(owner, name), alias)
        return None if raw is None else AliasRecord(**json.loads(raw))

    def all(self, owner: str | None, name: str) -> list[AliasRecord]:
        """The lineage's aliases, sorted by alias."""
        raw: dict[bytes, bytes] = self.redis.hgetall(keys.model_aliases(owner, name))  # type: ignore[assignment]
        records = [AliasRecord(**json.loads(value)) for value in raw.values()]
        return sorted(records, key=lambda record: record.alias)

    def history(self, owner: str | None, name: str) -> list[dict[str, Any]]:
        """Every move of the lineage's aliases, oldest first: {alias, from, to, at, by}."""
        raw: list[bytes] = self.redis.lrange(keys.model_alias_history(owner, name), 0, -1)  # type: ignore[assignment]
        return [json.loads(entry) for entry in raw]

    def _move(
        self,
        owner: str | None,
        name: str,
        alias: str,
        target: AliasRecord | None,
        by: str | None,
        expected: int | None = _UNCHECKED,
    ) -> AliasRecord | None:
        """Point `alias` at `target` (None: remove it) and log the move, atomically; with `expected`, only
        while the alias still points at that version (None: while it does not exist). Returns the previous
        record."""
        aliases_key = keys.model_aliases(owner, name)
        previous: AliasRecord | None = None

        def move(pipe: Pipeline) -> None:
            nonlocal previous
            raw = pipe.hget(aliases_key, alias)
            previous = None if raw is None else AliasRecord(**json.loads(raw))
            current = None if previous is None else previous.version
            if expected is not _UNCHECKED and current != expected:
                raise AliasConflictError(alias, expected, current)
            if target is None and previous is None:
                return  # nothing to remove, nothing to log
            entry = {
                "alias": alias,
                "from": current,
                "to": None if target is None else target.version,
                "at": utc_now() if target is None else target.updated_at,
                "by": by,
            }
            pipe.multi()
            if target is None:
                pipe.hdel(aliases_key, alias)
            else:
                pipe.hset(aliases_key, alias, json.dumps(target.to_dict()))
            pipe.rpush(keys.model_alias_history(owner, name), json.dumps(entry))

        self.redis.transaction(move, aliases_key)
        return previous

    def set(
        self,
        owner: str | None,
        name: str,
        alias: str,
        *,
        version: int,
        model_id: str,
        by: str | None,
        expected: int | None = _UNCHECKED,
    ) -> AliasRecord:
        """Point `alias` at `version` (model `model_id`) of the lineage; AliasConflictError when `expected`
        is given and the alias no longer points there."""
        record = AliasRecord(alias=alias, version=version, model_id=model_id, updated_at=utc_now(), updated_by=by)
        self._move(owner, name, alias, record, by, expected)
        return record

    def delete(self, owner: str | None, name: str, alias: str, *, by: str | None) -> bool:
        """Remove `alias`; False when it did not exist (nothing is logged then)."""
        return self._move(owner, name, alias, None, by) is not None
