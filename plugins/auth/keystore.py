"""Sidecar API keys in the shared database (table ``auth_keys``)."""

from __future__ import annotations

import builtins
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from plugins.auth.keys import format_key, hash_secret, new_key_id, new_secret
from plugins.store.db import Database, Row

_COLUMNS = ("key_id, secret_hash, owner, org, role, name, created_at, expires_at, revoked_at, "
            "rotated_at")
#: Longest owner, organisation or name a key may carry (they appear in logs and tables).
MAX_LABEL_LENGTH = 200


def key_problem(owner: str, role: str, org: str, roles: Iterable[str],
                name: str | None = None) -> tuple[str, str] | None:
    """Why a key for ``owner`` with ``role`` in ``org`` cannot be created, as ``(field,
    message)``; ``None`` when it can. ``roles`` are the role names of ``auth.roles``.

    The ``keys create`` command and the admin API ask this same question.
    """
    known = list(roles)
    if role not in known:
        return "role", f"unknown role {role!r} (roles: {', '.join(known)})"
    for field, value in (("owner", owner), ("org", org), ("name", name)):
        if value is None:
            continue
        if field != "name" and not value.strip():
            return field, "must not be empty"
        if len(value) > MAX_LABEL_LENGTH:
            return field, f"must be at most {MAX_LABEL_LENGTH} characters"
        # A line break in an owner would forge lines in tables and text logs.
        if any(unicodedata.category(c) == "Cc" for c in value):
            return field, "must not contain control characters"
    return None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key (its hash, never the key)."""

    key_id: str
    secret_hash: str
    owner: str
    org: str
    role: str
    name: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    rotated_at: float | None

    @classmethod
    def from_row(cls, row: Row) -> KeyRecord:
        """Build from a database row."""
        def opt(value: object) -> float | None:
            return None if value is None else float(value)  # type: ignore[arg-type]

        return cls(
            key_id=str(row["key_id"]), secret_hash=str(row["secret_hash"]),
            owner=str(row["owner"]), org=str(row["org"]), role=str(row["role"]),
            name=row["name"], created_at=float(row["created_at"]),
            expires_at=opt(row["expires_at"]), revoked_at=opt(row["revoked_at"]),
            rotated_at=opt(row["rotated_at"]),
        )

    def status(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at wall-clock time ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


class KeyStore:
    """Create, find, list, revoke and rotate keys. ``wall`` is the wall clock (epoch seconds)."""

    def __init__(self, db: Database, wall: Callable[[], float] = time.time) -> None:
        self.db = db
        self.wall = wall

    async def get(self, key_id: str) -> KeyRecord | None:
        """The key ``key_id``, or ``None``."""
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM auth_keys WHERE key_id = ?",
                                     (key_id,))
        return KeyRecord.from_row(row) if row else None

    async def create(self, owner: str, role: str, org: str = "default", name: str | None = None,
                     expires_at: float | None = None) -> tuple[KeyRecord, str]:
        """Store a new key; returns its record and the full key (shown to the user once)."""
        key_id, secret = new_key_id(), new_secret()
        now = self.wall()
        await self.db.execute(
            "INSERT INTO auth_keys (key_id, secret_hash, owner, org, role, name, created_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, hash_secret(key_id, secret), owner, org, role, name, now, expires_at))
        record = await self.get(key_id)
        assert record is not None
        return record, format_key(key_id, secret)

    async def list(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM auth_keys ORDER BY created_at, key_id")
        return [KeyRecord.from_row(r) for r in rows]

    async def page(self, org: str, after: str | None, limit: int,
                   owner: str | None = None) -> builtins.list[KeyRecord]:
        """At most ``limit`` keys of ``org`` (and of ``owner``, if given) in key id order,
        those after key id ``after`` only."""
        where, params = "org = ?", [org]
        if owner is not None:
            where += " AND owner = ?"
            params.append(owner)
        if after is not None:
            where += " AND key_id > ?"
            params.append(after)
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM auth_keys WHERE {where} ORDER BY key_id LIMIT ?",
            (*params, limit))
        return [KeyRecord.from_row(r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key for good; ``False`` if there is no such key (revoking twice is fine)."""
        changed = await self.db.execute(
            "UPDATE auth_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
            (self.wall(), key_id))
        return changed > 0

    async def rotate(self, key_id: str) -> str | None:
        """Give an active key a new secret (the old one stops working); returns the new key.

        ``None`` when the key does not exist or is revoked.
        """
        secret = new_secret()
        changed = await self.db.execute(
            "UPDATE auth_keys SET secret_hash = ?, rotated_at = ? "
            "WHERE key_id = ? AND revoked_at IS NULL",
            (hash_secret(key_id, secret), self.wall(), key_id))
        return format_key(key_id, secret) if changed else None
