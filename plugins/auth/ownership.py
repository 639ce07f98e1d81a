"""Who owns which upstream resource (table ``auth_ownership``) and who may see it.

Agents belong to an organisation; conversations, files and batch jobs to an owner within an
organisation. Records are written when the sidecar relays the response that created the
resource. A record not yet in the database (the database was briefly unreachable, or a stream
announced a new conversation and the write is still on its way) waits in an in-memory
*pending* map that lookups consult first, and is retried in the background until it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from plugins.auth.cache import LookupCache, StoreHealth, StoreUnreachable
from plugins.store.db import Database, Row
from proxy.context import Identity

logger = logging.getLogger("mistral_sidecar.auth")

AGENT = "agent"
CONVERSATION = "conversation"
FILE = "file"
BATCH_JOB = "batch_job"
KINDS = (AGENT, CONVERSATION, FILE, BATCH_JOB)
#: Kinds shared by everyone in the organisation (the rest belong to one owner).
ORG_SCOPED = frozenset({AGENT})

ResourceKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Ownership:
    """The owner of one resource."""

    kind: str
    resource_id: str
    org: str
    owner: str
    key_id: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> Ownership:
        """Build from a database row."""
        return cls(str(row["kind"]), str(row["resource_id"]), str(row["org"]),
                   str(row["owner"]), row["key_id"])


def may_see(identity: Identity, record: Ownership | None, org_admin: bool) -> bool:
    """Whether ``identity`` may see (and act on) the resource ``record`` describes.

    ``org_admin`` is whether the caller's role holds the ``org_admin`` action. Resources with
    no record were created outside the sidecar: only org admins see them (until adopted).
    """
    if record is None:
        return org_admin
    if record.org != identity.org:
        return False
    if record.kind in ORG_SCOPED or org_admin:
        return True
    return record.owner == identity.owner


class OwnershipStore:
    """Reads (cached) and writes ownership records."""

    def __init__(self, db: Database, health: StoreHealth, cache_ttl: float,
                 negative_ttl: float, stale_ttl: float, retry_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.db = db
        self.health = health
        self.wall = wall
        self.retry_interval = retry_interval
        self.cache: LookupCache[ResourceKey, Ownership] = LookupCache(
            health, cache_ttl, negative_ttl, stale_ttl, clock=clock)
        self.pending: dict[ResourceKey, Ownership] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # --- reading -------------------------------------------------------------------------

    async def _load(self, key: ResourceKey) -> Ownership | None:
        row = await self.db.fetchone(
            "SELECT kind, resource_id, org, owner, key_id FROM auth_ownership "
            "WHERE kind = ? AND resource_id = ?", key)
        return Ownership.from_row(row) if row else None

    async def _load_many(self, keys: list[ResourceKey]) -> dict[ResourceKey, Ownership]:
        found: dict[ResourceKey, Ownership] = {}
        by_kind: dict[str, list[str]] = {}
        for kind, resource_id in keys:
            by_kind.setdefault(kind, []).append(resource_id)
        for kind, ids in by_kind.items():
            marks = ", ".join("?" for _ in ids)
            rows = await self.db.fetchall(
                "SELECT kind, resource_id, org, owner, key_id FROM auth_ownership "
                f"WHERE kind = ? AND resource_id IN ({marks})", (kind, *ids))
            for row in rows:
                record = Ownership.from_row(row)
                found[(record.kind, record.resource_id)] = record
        return found

    async def get(self, kind: str, resource_id: str) -> Ownership | None:
        """The record for one resource (``None``: created elsewhere, or unknown).

        Raises :class:`StoreUnreachable` during an outage when nothing is cached.
        """
        key = (kind, resource_id)
        pending = self.pending.get(key)
        if pending is not None:
            return pending
        return await self.cache.get(key, self._load)

    async def get_many(self, kind: str, ids: list[str]) -> dict[str, Ownership | None]:
        """Records for several resources of one kind, with one query for the cache misses."""
        keys = [(kind, i) for i in ids]
        out: dict[str, Ownership | None] = {}
        lookup = [k for k in keys if k not in self.pending]
        found = await self.cache.get_many(lookup, self._load_many) if lookup else {}
        for key in keys:
            out[key[1]] = self.pending.get(key) or found.get(key)
        return out

    # --- writing -------------------------------------------------------------------------

    async def _write(self, record: Ownership) -> None:
        # An upsert: a record may be written twice (retry after an ambiguous failure).
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM auth_ownership WHERE kind = ? AND resource_id = ?",
                             (record.kind, record.resource_id))
            await tx.execute(
                "INSERT INTO auth_ownership (kind, resource_id, org, owner, key_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record.kind, record.resource_id, record.org, record.owner, record.key_id,
                 self.wall()))

    def remember(self, record: Ownership) -> None:
        """Make a record visible at once and persist it in the background (sync callers)."""
        self.pending[(record.kind, record.resource_id)] = record
        self._ensure_flusher()
        self._wake.set()

    async def record(self, record: Ownership, *, retrying: bool = False) -> bool:
        """Persist a record now; on an outage keep it pending and retry later.

        Returns whether it reached the database.
        """
        key = (record.kind, record.resource_id)
        self.pending[key] = record
        try:
            await self.health.run(self._write(record))
        except StoreUnreachable:
            if not retrying:
                logger.warning("ownership of %s %s not yet saved (database unreachable); "
                               "retrying in the background", record.kind, record.resource_id)
            self._ensure_flusher()
            return False
        if self.pending.get(key) is record:
            del self.pending[key]
        self.cache.put(key, record)
        return True

    async def delete(self, kind: str, resource_id: str) -> None:
        """Forget a deleted resource (best effort: a leftover row is harmless)."""
        key = (kind, resource_id)
        self.pending.pop(key, None)
        self.cache.forget(key)
        with contextlib.suppress(StoreUnreachable):
            await self.health.run(self.db.execute(
                "DELETE FROM auth_ownership WHERE kind = ? AND resource_id = ?", key))

    async def flush(self) -> None:
        """Try to persist every pending record once."""
        for record in list(self.pending.values()):
            await self.record(record, retrying=True)

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self.pending:
            self._wake.clear()
            await self.flush()
            if self.pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.retry_interval):
                        await self._wake.wait()

    async def close(self) -> None:
        """Stop the background writer after one last attempt."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self.pending:
            with contextlib.suppress(Exception):
                await self.flush()
        if self.pending:
            logger.error("%d ownership record(s) could not be saved before shutdown",
                         len(self.pending))


__all__ = ["AGENT", "BATCH_JOB", "CONVERSATION", "FILE", "KINDS", "Ownership",
           "OwnershipStore", "StoreUnreachable", "may_see"]
