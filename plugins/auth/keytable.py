"""Every sidecar key in memory, so that no request waits on the database for a known key.

The whole table (it is small: one row per key) is read at start-up and again every
``refresh_interval`` seconds in the background (``auth.cache_ttl_seconds``), so a revocation or
rotation made on any replica is seen here within that time. Requests read memory only, except:

* a key id that is not in memory may be asked of the database once (a key created a moment
  ago, through another replica), and is then remembered as absent for ``refresh_interval``;
* a presented secret that does not match the hash in memory may re-read that one key (a
  rotation made since the last refresh), at most once per ``recheck_after`` seconds per key;
* with ``refresh_interval`` 0 each request re-reads its key (instant revocation, at the price
  of a query per request).

None of these ever happens while :class:`~plugins.auth.cache.StoreHealth` says the database is
down: an unknown key then answers "cannot verify" (503) at once. Keys keep working from memory
for ``stale_ttl`` seconds after the database last vouched for them.

With a :class:`~plugins.auth.keysnapshot.KeySnapshot`, each table read from the database is
also written to disk, and :meth:`KeyTable.load` falls back to it when the database cannot be
reached at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from plugins.auth.cache import StoreHealth, StoreUnreachable
from plugins.auth.keysnapshot import KeySnapshot, SnapshotUnusable
from plugins.auth.keystore import KeyRecord, KeyStore

logger = logging.getLogger("mistral_sidecar.auth")

#: An unchanged table is written to disk again after this long, so that the snapshot's age
#: says how long ago the database last vouched for it.
SNAPSHOT_REFRESH_SECONDS = 60.0
#: The background refresh never runs more often than this (``auth.cache_ttl_seconds`` 0).
MIN_REFRESH_SECONDS = 0.1
_NEVER = float("-inf")


@dataclass(slots=True)
class _Entry:
    record: KeyRecord
    #: When (monotonic) the database last vouched for this row.
    read_at: float
    #: When (monotonic) this one key was last re-read for a secret that did not match.
    rechecked_at: float = _NEVER


class KeyTable:
    """The key table in memory, kept current in the background.

    ``clock`` is monotonic time, ``wall`` epoch seconds (the snapshot's age, key expiry).
    """

    def __init__(self, store: KeyStore, health: StoreHealth, *, refresh_interval: float,
                 stale_ttl: float, snapshot: KeySnapshot | None = None,
                 recheck_after: float = 0.2, max_absent: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.health = health
        self.refresh_interval = refresh_interval
        self.stale_ttl = stale_ttl
        self.snapshot = snapshot
        self.recheck_after = recheck_after
        self.max_absent = max_absent
        self.clock = clock
        self.wall = wall
        self._entries: dict[str, _Entry] = {}
        self._absent: OrderedDict[str, float] = OrderedDict()
        self._reads: dict[str, asyncio.Task[KeyRecord | None]] = {}
        #: When (monotonic) the whole table was last read (``None``: never).
        self.loaded_at: float | None = None
        #: Where the table came from: ``database``, ``snapshot`` or ``none``.
        self.source = "none"
        self._saved: tuple[KeyRecord, ...] | None = None
        self._saved_at = _NEVER
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        health.on_recovery(self._wake.set)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def per_request(self) -> bool:
        """Whether each request re-reads its key (``refresh_interval`` 0)."""
        return self.refresh_interval <= 0

    def age(self) -> float | None:
        """Seconds since the whole table was last read (``None``: never)."""
        return None if self.loaded_at is None else self.clock() - self.loaded_at

    # --- the request path ------------------------------------------------------------------

    async def lookup(self, key_id: str) -> KeyRecord | None:
        """The key ``key_id`` (``None``: no such key).

        Raises :class:`StoreUnreachable` when memory cannot vouch for it and the database is
        down (or fails now).
        """
        entry = self._entries.get(key_id)
        now = self.clock()
        vouched = entry is not None and now - entry.read_at <= self.stale_ttl
        if entry is not None and vouched and not self.per_request:
            return entry.record
        if self.health.down:
            if entry is not None and vouched:
                return entry.record
            raise StoreUnreachable("key not known here")
        if entry is None and not self.per_request:
            absent_since = self._absent.get(key_id)
            if absent_since is not None and now - absent_since < self.refresh_interval:
                return None
        try:
            return await self._read_one(key_id)
        except StoreUnreachable:
            if entry is not None and vouched:
                return entry.record  # the read that just found the outage
            raise

    async def recheck(self, key_id: str) -> KeyRecord | None:
        """The key ``key_id`` re-read from the database, for a secret that did not match
        (unless it was re-read less than ``recheck_after`` seconds ago).

        Raises :class:`StoreUnreachable` while the database is down: the secret may be one
        rotated in since the table was read.
        """
        entry = self._entries.get(key_id)
        if entry is not None and self.clock() - entry.rechecked_at < self.recheck_after:
            return entry.record
        if self.health.down:
            raise StoreUnreachable("cannot re-read the key")
        return await self._read_one(key_id, recheck=True)

    async def _read_one(self, key_id: str, recheck: bool = False) -> KeyRecord | None:
        task = self._reads.get(key_id)
        if task is None:
            # A task of its own, so that a caller who goes away does not cancel the read the
            # other callers of the same key are waiting for.
            task = asyncio.get_running_loop().create_task(self._fetch(key_id, recheck))
            self._reads[key_id] = task
            task.add_done_callback(functools.partial(self._settled, key_id))
        return await asyncio.shield(task)

    def _settled(self, key_id: str, task: asyncio.Task[KeyRecord | None]) -> None:
        if self._reads.get(key_id) is task:
            del self._reads[key_id]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _fetch(self, key_id: str, recheck: bool) -> KeyRecord | None:
        record = await self.health.run(self.store.get(key_id))
        now = self.clock()
        old = self._entries.get(key_id)
        if record is None:
            self._entries.pop(key_id, None)
            self._absent[key_id] = now
            self._absent.move_to_end(key_id)
            while len(self._absent) > self.max_absent:
                self._absent.popitem(last=False)
        else:
            rechecked_at = now if recheck else old.rechecked_at if old else _NEVER
            self._entries[key_id] = _Entry(record, now, rechecked_at)
            self._absent.pop(key_id, None)
        return record

    # --- reading the whole table -----------------------------------------------------------

    async def read_all(self) -> None:
        """Read the whole table from the database (raises what the query raises)."""
        started = self.clock()
        records = await self.store.list()
        self._install(records, started)

    def _install(self, records: list[KeyRecord], started: float) -> None:
        fresh: dict[str, _Entry] = {}
        for record in records:
            old = self._entries.get(record.key_id)
            if old is not None and old.read_at > started:
                fresh[record.key_id] = old  # re-read on its own after this read began
            else:
                fresh[record.key_id] = _Entry(record, started,
                                              old.rechecked_at if old else _NEVER)
        for key_id, old in self._entries.items():
            if key_id not in fresh and old.read_at > started:
                fresh[key_id] = old  # created after this read began
        self._entries = fresh
        for key_id, since in list(self._absent.items()):
            if since <= started:
                del self._absent[key_id]
        self.loaded_at = started
        self.source = "database"

    async def refresh(self) -> bool:
        """Re-read the table unless the database is down; whether it was read."""
        try:
            await self.health.run(self.read_all())
        except StoreUnreachable:
            return False
        return True

    # --- start-up and the background refresh -----------------------------------------------

    async def load(self) -> str | None:
        """Fill the table at start-up: from the database, else from a recent snapshot.

        Returns ``None`` when the table is usable, else why not (database unreachable and
        no usable snapshot).
        """
        if await self.refresh():
            await self.save_snapshot()
            return None
        if self.snapshot is None:
            return "no key snapshot (SIDECAR_AUTH_KEY_SNAPSHOT=false)"
        try:
            snapshot = await asyncio.to_thread(self.snapshot.read)
        except SnapshotUnusable as exc:
            return str(exc)
        age = max(0.0, self.wall() - snapshot.written_at)
        if age > self.stale_ttl:
            return (f"key snapshot {self.snapshot.path} is {age:.0f} s old, older than "
                    f"auth.stale_ttl_seconds ({self.stale_ttl:g})")
        read_at = self.clock() - age
        self._entries = {k.key_id: _Entry(k, read_at) for k in snapshot.keys}
        self.loaded_at = read_at
        self.source = "snapshot"
        logger.warning("database unreachable at start-up: serving %d key(s) from the snapshot "
                       "written %.0f s ago", len(self._entries), age)
        return None

    async def save_snapshot(self) -> None:
        """Write the table read from the database to disk if it changed (or has not been
        written for a while); a failure is logged, never raised."""
        if self.snapshot is None or self.source != "database" or self.loaded_at is None:
            return
        records = tuple(sorted((e.record for e in self._entries.values()),
                               key=lambda r: r.key_id))
        if records == self._saved and \
                self.clock() - self._saved_at < SNAPSHOT_REFRESH_SECONDS:
            return
        loaded_at = self.loaded_at
        written_at = self.wall() - (self.clock() - loaded_at)
        try:
            await asyncio.to_thread(self.snapshot.write, records, written_at)
        except OSError as exc:
            logger.warning("could not write the key snapshot %s: %s", self.snapshot.path, exc)
            return
        self._saved, self._saved_at = records, self.clock()

    def start(self) -> None:
        """Refresh in the background from now on."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="auth-keys")

    async def _run(self) -> None:
        interval = max(self.refresh_interval, MIN_REFRESH_SECONDS)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
                await self.save_snapshot()
            except Exception:
                # Must not die: revocations reach this replica only through it.
                logger.exception("refreshing the key table failed; retrying")

    async def close(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
