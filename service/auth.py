"""API keys (`Authorization: Bearer <key>`), roles and the owner id stored with each resource.

Policy: with no keys configured every caller is an anonymous admin (the API then binds to loopback).
With keys, every route except /healthz, /readyz (and /metrics when `metrics_public`) needs a known key.
User keys see and act on their own datasets, jobs and models only; admin keys see everything.
Admin-only: /metrics when it is not public (it reveals every owner's activity).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from service.errors import ApiError

Role = Literal["user", "admin"]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    """Who is calling: `owner` is a non-reversible id of the key (None without authentication)."""

    owner: str | None
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def scope(self) -> str | None:
        """The owner filter for list calls: None (everyone) for admins."""
        return None if self.is_admin else self.owner

    def may_see(self, owner: str | None) -> bool:
        """Whether a resource created by `owner` is visible to this caller."""
        return self.is_admin or owner == self.owner


ANONYMOUS = Principal(owner=None, role="admin")


def owner_id(key: str) -> str:
    """The owner id stored with a resource: sha256 of the key, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys, compared in constant time."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = [(key.encode(), role) for key, role in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def lookup(self, key: str) -> Role | None:
        """The role of `key`, or None; every configured key is compared so timing reveals nothing."""
        candidate = key.encode()
        found: Role | None = None
        for known, role in self._keys:
            if secrets.compare_digest(known, candidate):
                found = "admin" if role == "admin" else "user"
        return found


def authenticate(request: Request, keyring: KeyRing) -> Principal:
    """The caller of `request`; 401 (with a Bearer challenge) without a known key."""
    if not keyring.enabled:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise ApiError(
            401, "unauthorized", "missing API key: send `Authorization: Bearer <key>`", headers=_CHALLENGE
        )
    role = keyring.lookup(credentials)
    if role is None:
        raise ApiError(401, "unauthorized", "unknown API key", headers=_CHALLENGE)
    return Principal(owner=owner_id(credentials), role=role)


def require_admin(principal: Principal) -> None:
    """403 for a user key on an admin-only action."""
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "this action needs an admin API key")
