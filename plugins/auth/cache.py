"""A small lookup cache in front of the database that rides out outages, and the shared
record of whether the database is down.

Every entry is *fresh* for ``ttl`` seconds (``negative_ttl`` for "not found"), after which the
next lookup asks the database again. An entry is kept as *last known good* for ``stale_ttl``
seconds and used only when the database cannot answer, so a database outage does not turn
callers that were just served into failures. Lookups for the same key share one query.

Once a query fails, :class:`StoreHealth` says the database is down and nothing on the request
path asks it again: lookups answer from what is known at once, until a background probe (never
a request) finds the database back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from plugins.store.db import DatabaseUnavailable
from plugins.store.deadline import within

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

logger = logging.getLogger("mistral_sidecar.auth")

#: What counts as "the database cannot answer" (anything else is a bug, and raised).
OUTAGES = (DatabaseUnavailable, TimeoutError, OSError)


class StoreUnreachable(Exception):
    """The database could not answer and the cache holds nothing usable."""


class StoreHealth:
    """Whether the database is down, shared by the key table and the ownership store.

    :meth:`run` bounds every query by ``timeout``; the first that fails marks the database
    down, and from then on :meth:`run` refuses at once. A probe task then calls ``probe``
    every ``probe_interval`` seconds and, on its first success, marks the database up again
    and calls the ``on_recovery`` listeners.
    """

    def __init__(self, timeout: float, probe: Callable[[], Awaitable[object]],
                 probe_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.probe = probe
        self.probe_interval = probe_interval
        self.clock = clock
        self._down = False
        #: When the current outage was noticed (``None`` while up).
        self.down_since: float | None = None
        self.failures = 0
        #: Outcome of the latest query (``None`` before the first).
        self.last_ok: bool | None = None
        self._listeners: list[Callable[[], None]] = []
        self._prober: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        """True from a failed query until the probe finds the database back."""
        return self._down

    def on_recovery(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the database comes back."""
        self._listeners.append(listener)

    def failed(self) -> None:
        """Record a failed query: the database is down until the probe says otherwise."""
        self.failures += 1
        self.last_ok = False
        if self._down:
            return
        self._down = True
        self.down_since = self.clock()
        logger.warning("database unreachable: keys and ownership answer from memory until it "
                       "is back")
        if self._prober is None or self._prober.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe with
                self._prober = asyncio.get_running_loop().create_task(
                    self._probe_loop(), name="auth-store-probe")

    def succeeded(self) -> None:
        """Record a successful query (or probe)."""
        self.last_ok = True
        if not self._down:
            return
        self._down = False
        self.down_since = None
        logger.info("database reachable again")
        for listener in self._listeners:
            listener()

    async def run(self, query: Awaitable[V]) -> V:
        """Await ``query`` within the timeout; outages raise :class:`StoreUnreachable`, and so
        does any call while the database is down (``query`` is then never started)."""
        if self._down:
            if inspect.iscoroutine(query):
                query.close()
            raise StoreUnreachable("database down")
        try:
            result = await within(query, self.timeout)
        except OUTAGES as exc:
            self.failed()
            raise StoreUnreachable(type(exc).__name__) from None
        self.succeeded()
        return result

    async def _probe_loop(self) -> None:
        while self._down:
            await asyncio.sleep(self.probe_interval)
            try:
                await within(self.probe(), self.timeout)
            except OUTAGES:
                continue
            except Exception:
                # Answers, but wrongly: not back in a usable state. Keep probing.
                logger.exception("probing the database failed")
                continue
            self.succeeded()

    async def close(self) -> None:
        """Stop probing."""
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V | None
    fetched: float


class LookupCache(Generic[K, V]):
    """TTL cache with a last-known-good fallback; ``None`` values mean "not found"."""

    def __init__(self, health: StoreHealth, ttl: float, negative_ttl: float, stale_ttl: float,
                 max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.health = health
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_ttl = stale_ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Task[V | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self, entry: _Entry[V], now: float) -> bool:
        ttl = self.ttl if entry.value is not None else self.negative_ttl
        return now - entry.fetched < ttl

    def _stale_value(self, key: K, now: float) -> V | None:
        """The last known good value, if young enough; raises when there is none."""
        entry = self._entries.get(key)
        if entry is not None and entry.value is not None and now - entry.fetched < self.stale_ttl:
            return entry.value
        raise StoreUnreachable("no cached entry")

    def put(self, key: K, value: V | None) -> None:
        """Store a value just read from (or written to) the database."""
        self._entries[key] = _Entry(value, self.clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        """Drop an entry (after this process changed the row)."""
        self._entries.pop(key, None)

    def cached(self, key: K, max_age: float | None = None) -> tuple[bool, V | None]:
        """``(True, value)`` if a fresh entry exists, else ``(False, None)``.

        ``max_age`` shortens what counts as fresh for this one lookup.
        """
        entry = self._entries.get(key)
        if entry is None or not self._fresh(entry, self.clock()):
            return False, None
        if max_age is not None and self.clock() - entry.fetched >= max_age:
            return False, None
        return True, entry.value

    async def get(self, key: K, load: Callable[[K], Awaitable[V | None]],
                  max_age: float | None = None) -> V | None:
        """The value for ``key``: fresh from cache, else from ``load``, else last known good.

        Raises :class:`StoreUnreachable` when the database is down and nothing usable is
        cached. ``max_age`` asks for an entry at most that old (to re-check a doubtful hit).
        """
        hit, value = self.cached(key, max_age)
        if hit:
            return value
        if self.health.down:
            return self._stale_value(key, self.clock())
        task = self._inflight.get(key)
        if task is None:
            # A task of its own, so that a caller who goes away does not cancel the lookup
            # the other callers of the same key are waiting for.
            task = asyncio.get_running_loop().create_task(self._refresh(key, load))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._settled, key))
        return await asyncio.shield(task)

    def _settled(self, key: K, task: asyncio.Task[V | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _refresh(self, key: K, load: Callable[[K], Awaitable[V | None]]) -> V | None:
        try:
            value = await self.health.run(load(key))
        except StoreUnreachable:
            return self._stale_value(key, self.clock())
        self.put(key, value)
        return value

    async def get_many(self, keys: Iterable[K],
                       load: Callable[[list[K]], Awaitable[dict[K, V]]]) -> dict[K, V | None]:
        """Values for several keys with one ``load`` call for all the misses."""
        now = self.clock()
        result: dict[K, V | None] = {}
        missing: list[K] = []
        for key in dict.fromkeys(keys):
            entry = self._entries.get(key)
            if entry is not None and self._fresh(entry, now):
                result[key] = entry.value
            else:
                missing.append(key)
        if not missing:
            return result
        if not self.health.down:
            try:
                found = await self.health.run(load(missing))
            except StoreUnreachable:
                pass
            else:
                for key in missing:
                    result[key] = found.get(key)
                    self.put(key, found.get(key))
                return result
        for key in missing:
            result[key] = self._stale_value(key, now)
        return result
