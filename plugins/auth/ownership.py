"""Who owns which upstream resource (table ``auth_ownership``) and who may see it.

Agents belong to an organisation; conversations, files and batch jobs to an owner within an
organisation. A record is written when the sidecar relays the response that created the
resource, and the response completes only once the record is durable: in the database, or,
while the database cannot be reached, in this process's spool file
(:mod:`plugins.auth.spool`), replayed into the database as soon as it answers again (and at
the next start, by whichever process starts first).

Writes are upserts (``INSERT ... ON CONFLICT (kind, resource_id) DO UPDATE``): writing a
record twice, from two places at once, or replaying it after it landed, is harmless. A
replayed record never overwrites a newer one (an adoption made meanwhile).

A resource this process does not know answers as unknown: only the admins of the
organisation configured to own unrecorded resources (``auth.unowned_org``) may see it, so a
lost or not-yet-replicated record never hands a resource to the wrong organisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from plugins.auth.cache import LookupCache, StoreHealth, StoreUnreachable
from plugins.auth.spool import OwnershipSpool
from plugins.store.db import Database, Executor, Row
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

_COLUMNS = "kind, resource_id, org, owner, key_id, created_at"
_UPSERT = (
    f"INSERT INTO auth_ownership ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, resource_id) DO UPDATE SET org = excluded.org, "
    "owner = excluded.owner, key_id = excluded.key_id, created_at = excluded.created_at")
#: A replayed or repeated record must not undo a newer one (an adoption made meanwhile).
_NOT_OLDER = " WHERE auth_ownership.created_at <= excluded.created_at"


@dataclass(frozen=True, slots=True)
class Ownership:
    """The owner of one resource; ``created_at`` is when the record was made (epoch s)."""

    kind: str
    resource_id: str
    org: str
    owner: str
    key_id: str | None = None
    created_at: float = field(default_factory=time.time, compare=False)

    @property
    def key(self) -> ResourceKey:
        """``(kind, resource_id)``."""
        return (self.kind, self.resource_id)

    @classmethod
    def from_row(cls, row: Row) -> Ownership:
        """Build from a database row (or a spool line, which has the same fields)."""
        key_id = row.get("key_id")
        return cls(str(row["kind"]), str(row["resource_id"]), str(row["org"]),
                   str(row["owner"]), None if key_id is None else str(key_id),
                   float(row["created_at"]))

    def to_row(self) -> Row:
        """The record as a JSON-safe mapping (a spool line)."""
        return {"kind": self.kind, "resource_id": self.resource_id, "org": self.org,
                "owner": self.owner, "key_id": self.key_id, "created_at": self.created_at}


async def upsert(db: Executor, record: Ownership, *, replace_newer: bool = False) -> None:
    """Write ``record``, replacing the row of the same resource unless that row is newer
    (``replace_newer``: replace it whatever its age, as an operator's adoption does)."""
    sql = _UPSERT if replace_newer else _UPSERT + _NOT_OLDER
    await db.execute(sql, (record.kind, record.resource_id, record.org, record.owner,
                           record.key_id, record.created_at))


def may_see(identity: Identity, record: Ownership | None, org_admin: bool,
            unowned_org: str) -> bool:
    """Whether ``identity`` may see (and act on) the resource ``record`` describes.

    ``org_admin`` is whether the caller's role holds the ``org_admin`` action. A resource
    with no record (created outside the sidecar, or not known here yet) belongs to no one:
    only org admins of ``unowned_org`` see it, until it is adopted.
    """
    if record is None:
        return org_admin and identity.org == unowned_org
    if record.org != identity.org:
        return False
    if record.kind in ORG_SCOPED or org_admin:
        return True
    return record.owner == identity.owner


class OwnershipStore:
    """Reads (cached) and durably writes ownership records."""

    def __init__(self, db: Database, health: StoreHealth, spool: OwnershipSpool,
                 cache_ttl: float, negative_ttl: float, stale_ttl: float,
                 retry_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.health = health
        self.spool = spool
        self.retry_interval = retry_interval
        self.cache: LookupCache[ResourceKey, Ownership] = LookupCache(
            health, cache_ttl, negative_ttl, stale_ttl, clock=clock)
        #: Records announced by a stream still running (this process only, not yet durable:
        #: the stream's caller has not received a complete response).
        self.announced: dict[ResourceKey, Ownership] = {}
        #: Records in the spool file that the database does not have yet.
        self.spooled: dict[ResourceKey, Ownership] = {}
        self._replayer: asyncio.Task[None] | None = None
        self._replay_lock = asyncio.Lock()

    @property
    def pending(self) -> Mapping[ResourceKey, Ownership]:
        """Every record known here that the database may not have yet."""
        return {**self.spooled, **self.announced}

    def _known(self, key: ResourceKey) -> Ownership | None:
        return self.announced.get(key) or self.spooled.get(key)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Take this process's spool file, pick up what dead processes left, replay it."""
        for line in await asyncio.to_thread(self.spool.open):
            self._adopt_line(line)
        if self.spooled:
            logger.info("replaying %d spooled ownership record(s)", len(self.spooled))
            await self.replay()
            self._ensure_replayer()

    async def close(self) -> None:
        """Stop replaying after one last attempt; what is left stays in the spool file."""
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if self.spooled:
            with contextlib.suppress(Exception):
                await self.replay()
        if self.spooled:
            logger.warning("%d ownership record(s) stay in the spool for the next start",
                           len(self.spooled))
        self.spool.close()

    def _adopt_line(self, line: Row) -> None:
        try:
            record = Ownership.from_row(line)
        except (KeyError, TypeError, ValueError):
            logger.warning("skipping a malformed spooled ownership record")
            return
        known = self.spooled.get(record.key)
        if known is None or known.created_at <= record.created_at:
            self.spooled[record.key] = record

    # --- reading -------------------------------------------------------------------------

    async def _load(self, key: ResourceKey) -> Ownership | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM auth_ownership WHERE kind = ? AND resource_id = ?", key)
        return Ownership.from_row(row) if row else None

    async def _load_many(self, keys: list[ResourceKey]) -> dict[ResourceKey, Ownership]:
        found: dict[ResourceKey, Ownership] = {}
        by_kind: dict[str, list[str]] = {}
        for kind, resource_id in keys:
            by_kind.setdefault(kind, []).append(resource_id)
        for kind, ids in by_kind.items():
            marks = ", ".join("?" for _ in ids)
            rows = await self.db.fetchall(
                f"SELECT {_COLUMNS} FROM auth_ownership "
                f"WHERE kind = ? AND resource_id IN ({marks})", (kind, *ids))
            for row in rows:
                record = Ownership.from_row(row)
                found[record.key] = record
        return found

    async def get(self, kind: str, resource_id: str,
                  max_age: float | None = None) -> Ownership | None:
        """The record for one resource (``None``: unrecorded, or unknown here).

        ``max_age`` asks for a cache entry at most that old. Raises :class:`StoreUnreachable`
        during an outage when nothing is cached.
        """
        key = (kind, resource_id)
        known = self._known(key)
        if known is not None:
            return known
        return await self.cache.get(key, self._load, max_age)

    async def get_many(self, kind: str, ids: list[str]) -> dict[str, Ownership | None]:
        """Records for several resources of one kind, with one query for the cache misses."""
        keys = [(kind, i) for i in ids]
        lookup = [k for k in keys if self._known(k) is None]
        found = await self.cache.get_many(lookup, self._load_many) if lookup else {}
        return {key[1]: self._known(key) or found.get(key) for key in keys}

    # --- writing -------------------------------------------------------------------------

    def announce(self, record: Ownership) -> None:
        """Make a record visible here at once, before :meth:`record` makes it durable (a
        stream announces its conversation long before it ends)."""
        self.announced[record.key] = record

    async def record(self, record: Ownership) -> bool:
        """Make ``record`` durable before returning: in the database, else in the spool.

        Returns whether it reached the database. Never raises for a database problem: the
        resource exists upstream, so its record is kept whatever happens.
        """
        key = record.key
        if not self.health.down:
            try:
                await self.health.run(upsert(self.db, record))
            except StoreUnreachable:
                pass
            except Exception:
                logger.exception("ownership of %s %s could not be written; spooling it",
                                 record.kind, record.resource_id)
            else:
                self.cache.put(key, record)
                self.spooled.pop(key, None)
                self._forget_announced(record)
                return True
        await self._spool(record)
        return False

    def _forget_announced(self, record: Ownership) -> None:
        if self.announced.get(record.key) is record:
            del self.announced[record.key]

    async def _spool(self, record: Ownership) -> None:
        self.spooled[record.key] = record
        self._forget_announced(record)
        try:
            await self.spool.append([record.to_row()])
        except OSError:
            # Kept in memory and retried: the database may come back before this process
            # ends. Nothing better is possible on a full or broken disk.
            logger.exception("ownership of %s %s could not be spooled", record.kind,
                             record.resource_id)
        else:
            logger.warning("ownership of %s %s spooled (database unreachable)", record.kind,
                           record.resource_id)
        self._ensure_replayer()

    async def delete(self, kind: str, resource_id: str) -> None:
        """Forget a deleted resource (best effort: a leftover row is harmless)."""
        key = (kind, resource_id)
        self.announced.pop(key, None)
        self.spooled.pop(key, None)
        self.cache.forget(key)
        with contextlib.suppress(StoreUnreachable):
            await self.health.run(self.db.execute(
                "DELETE FROM auth_ownership WHERE kind = ? AND resource_id = ?", key))

    async def replay(self) -> int:
        """Write spooled records (this process's and dead processes') to the database;
        returns how many remain. Stops at the first outage."""
        async with self._replay_lock:
            for line in await self.spool.adopt_orphans():
                self._adopt_line(line)
            written = 0
            for key, record in list(self.spooled.items()):
                try:
                    await self.health.run(upsert(self.db, record))
                except StoreUnreachable:
                    break
                except Exception:
                    # Kept in the spool: a later attempt, or the next start, may succeed.
                    logger.exception("replaying ownership of %s %s failed", record.kind,
                                     record.resource_id)
                    break
                if self.spooled.get(key) is record:
                    del self.spooled[key]
                    self.cache.put(key, record)
                written += 1
            if written:
                await self.spool.rewrite(lambda: [r.to_row() for r in self.spooled.values()])
                logger.info("replayed %d spooled ownership record(s); %d left", written,
                            len(self.spooled))
            return len(self.spooled)

    def _ensure_replayer(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(self._replay_loop())

    async def _replay_loop(self) -> None:
        # The records are durable in the spool file already: this task only saves waiting
        # for the next start. It must not die on an unexpected error, though.
        while self.spooled:
            await asyncio.sleep(self.retry_interval)
            try:
                await self.replay()
            except Exception:
                logger.exception("replaying spooled ownership records failed; retrying")


__all__ = ["AGENT", "BATCH_JOB", "CONVERSATION", "FILE", "KINDS", "Ownership",
           "OwnershipStore", "StoreUnreachable", "may_see", "upsert"]
