"""The lookup cache's state machine (fresh, expired, last known good, outage), on a fake clock;
after an outage only the background probe asks the database again."""

from __future__ import annotations

import asyncio

import pytest

from plugins.auth.cache import LookupCache, StoreHealth, StoreUnreachable
from plugins.store.db import DatabaseUnavailable
from tests.conftest import wait_for


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Table:
    """A stand-in for the database: a dict that can be taken down."""

    def __init__(self, rows: dict[str, str]) -> None:
        self.rows = rows
        self.up = True
        self.queries = 0

    async def load(self, key: str) -> str | None:
        self.queries += 1
        if not self.up:
            raise DatabaseUnavailable("down")
        return self.rows.get(key)

    async def ping(self) -> None:
        if not self.up:
            raise DatabaseUnavailable("down")


def _cache(clock: Clock, table: Table | None = None) -> LookupCache[str, str]:
    probe = table.ping if table is not None else Table({}).ping
    health = StoreHealth(timeout=1.0, probe=probe, probe_interval=0.01, clock=clock)
    return LookupCache(health, ttl=2.0, negative_ttl=2.0, stale_ttl=60.0, clock=clock)


async def test_fresh_entries_are_reused_then_reloaded() -> None:
    clock, table = Clock(), Table({"k": "v1"})
    cache = _cache(clock)
    assert await cache.get("k", table.load) == "v1"
    table.rows["k"] = "v2"
    clock.now += 1.9
    assert await cache.get("k", table.load) == "v1" and table.queries == 1
    clock.now += 0.2
    assert await cache.get("k", table.load) == "v2" and table.queries == 2
    assert await cache.get("missing", table.load) is None
    table.rows["missing"] = "now here"
    clock.now += 2.1
    assert await cache.get("missing", table.load) == "now here"


async def test_outage_serves_last_known_good_and_refuses_unknown_keys() -> None:
    clock, table = Clock(), Table({"seen": "v", "unseen": "w"})
    cache = _cache(clock, table)
    await cache.get("seen", table.load)
    table.up = False
    clock.now += 30
    assert await cache.get("seen", table.load) == "v"
    queries = table.queries
    with pytest.raises(StoreUnreachable):
        await cache.get("unseen", table.load)
    # Until the probe finds the database back, no lookup asks it again, however late.
    assert await cache.get("seen", table.load) == "v"
    clock.now += 31  # past stale_ttl: even a known key cannot be vouched for any more
    with pytest.raises(StoreUnreachable):
        await cache.get("seen", table.load)
    await asyncio.sleep(0.05)
    assert cache.health.down and table.queries == queries
    table.up = True
    await wait_for(lambda: not cache.health.down, timeout=2)
    assert table.queries == queries  # the probe, not a lookup, found it back
    assert await cache.get("unseen", table.load) == "w"
    await cache.health.close()


async def test_concurrent_lookups_share_one_query() -> None:
    clock = Clock()
    cache = _cache(clock)
    release = asyncio.Event()
    calls = 0

    async def slow(key: str) -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return key.upper()

    waiters = [asyncio.ensure_future(cache.get("k", slow)) for _ in range(5)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller leaving must not fail the others
    release.set()
    results = await asyncio.gather(*waiters[1:])
    assert results == ["K"] * 4 and calls == 1


async def test_get_many_loads_only_misses() -> None:
    clock, table = Clock(), Table({"a": "1", "b": "2"})
    cache = _cache(clock)
    await cache.get("a", table.load)
    seen: list[list[str]] = []

    async def load_many(keys: list[str]) -> dict[str, str]:
        seen.append(keys)
        return {k: table.rows[k] for k in keys if k in table.rows}

    assert await cache.get_many(["a", "b", "c"], load_many) == {"a": "1", "b": "2", "c": None}
    assert seen == [["b", "c"]]
