"""No request waits on a dead dependency: PostgreSQL or Redis cut by the fault proxy, connections
refused or black-holed, while 10 keys (half of them never used on this sidecar) start
conversations. Every request succeeds, the median latency stays within 1.5x of the one before
the cut (the issue's bound), and every record lands exactly once when the dependency is back."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
import pytest
from auth_support import Key, auth_env, create_key
from toxiproxy import Proxy, Toxiproxy

from tests.conftest import (
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    Sidecar,
    SidecarFactory,
    wait_for,
)
from tests.persistence.persistence_helpers import MODEL, StoreReader
from tests.support.toxiproxy_fixture import listen_address

PLUGINS = "store,auth,ratelimit,persistence"
#: Records written behind the requests, retried quickly once the database is back.
PERSIST = {"SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS": "0.02",
           "SIDECAR_PERSISTENCE_RETRY_MAX_SECONDS": "0.2",
           "SIDECAR_PERSISTENCE_WRITE_TIMEOUT_SECONDS": "2"}
KEYS = 10
REQUESTS = 100
#: The issue's bound on the median during the outage, relative to before it.
P50_FACTOR = 1.5
#: Seconds between two requests of one phase.
PACE = 0.03
#: ``auth.db_timeout_seconds`` (its default): what a lookup waiting on the database would cost.
DB_TIMEOUT = 2.0


class Cut:
    """Cuts a fault proxy in one of two ways: refuse connections, or swallow every byte."""

    def __init__(self, proxy: Proxy, how: str) -> None:
        self.proxy = proxy
        self.how = how

    def start(self) -> None:
        """Make the dependency unreachable."""
        if self.how == "refused":
            self.proxy.disable()
        else:
            self.proxy.add_toxic(name="blackhole", type="timeout", attributes={"timeout": 0})

    def end(self) -> None:
        """Bring it back."""
        if self.how == "refused":
            self.proxy.enable()
        else:
            self.proxy.destroy_toxic("blackhole")


class Conversations:
    """Conversation starts, remembering what was asked so the records can be checked."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started: dict[str, Key] = {}

    async def start(self, http: aiohttp.ClientSession, key: Key) -> float:
        """Start one conversation; returns the latency in seconds."""
        begun = time.perf_counter()
        body = {"model": MODEL, "inputs": f"hello from {key.owner}"}
        async with http.post(self.url + "/v1/conversations", json=body,
                             headers={"Authorization": f"Bearer {key.key}"}) as resp:
            text = await resp.text()
            assert resp.status == 200, text
            answer: dict[str, Any] = await resp.json()
        elapsed = time.perf_counter() - begun
        self.started[answer["conversation_id"]] = key
        return elapsed

    async def run(self, http: aiohttp.ClientSession, keys: list[Key], count: int
                  ) -> list[float]:
        """``count`` starts, the keys taking turns, a few dozen a second (so that an outage
        phase outlasts the key refresh and the database probe)."""
        latencies = []
        for index in range(count):
            latencies.append(await self.start(http, keys[index % len(keys)]))
            await asyncio.sleep(PACE)
        return latencies

    def all_stored(self, db: StoreReader) -> bool:
        """Every conversation, its usage row, its entries and its owner in the database, once."""
        ids = list(self.started)
        if db.count("SELECT COUNT(*) AS n FROM usage_log") != len(ids):
            return False
        rows = db.rows("SELECT id FROM conversations")
        if sorted(r["id"] for r in rows) != sorted(ids):
            return False
        owners = {r["resource_id"]: (r["org"], r["owner"]) for r in db.rows(
            "SELECT resource_id, org, owner FROM auth_ownership WHERE kind = 'conversation'")}
        if owners != {cid: (k.org, k.owner) for cid, k in self.started.items()}:
            return False
        entries = db.rows("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d "
                          "FROM conversation_entries")[0]
        return bool(entries["n"] == entries["d"] == 2 * len(ids))


@pytest.fixture
def pg_proxy(toxiproxy_server: Toxiproxy, pg_database: dict[str, str]) -> Proxy:
    """A fault proxy in front of PostgreSQL."""
    return toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="postgres",
                                   listen="127.0.0.1:0")


@pytest.fixture
def redis_proxy(toxiproxy_server: Toxiproxy) -> Proxy:
    """A fault proxy in front of Redis."""
    return toxiproxy_server.create(upstream=f"{REDIS_HOST}:{REDIS_PORT}", name="redis",
                                   listen="127.0.0.1:0")


@pytest.fixture
async def http() -> Any:
    """One client session for the test."""
    async with aiohttp.ClientSession() as session:
        yield session


async def _keys(env: dict[str, str], start: int, count: int) -> list[Key]:
    return [await create_key(env, f"user{i}", "user", f"org{i % 3}")
            for i in range(start, start + count)]


async def _readiness(http: aiohttp.ClientSession, sidecar: Sidecar) -> dict[str, Any]:
    async with http.get(sidecar.url + "/readyz") as resp:
        checks: dict[str, Any] = (await resp.json())["checks"]
        return checks


@pytest.mark.parametrize("how", ["refused", "blackhole"])
async def test_postgres_cut_costs_requests_nothing_and_loses_nothing(
    how: str, start_sidecar: SidecarFactory, pg_database: dict[str, str], pg_proxy: Proxy,
    http: aiohttp.ClientSession, base_env: dict[str, str],
) -> None:
    host, port = listen_address(pg_proxy)
    env = auth_env({**pg_database, "DB_HOST": host, "DB_PORT": str(port)},
                   SIDECAR_PLUGINS_CHAIN=PLUGINS, **PERSIST)
    db = StoreReader(pg_database)
    direct = {**base_env, **auth_env(pg_database)}
    early = await _keys(direct, 0, 7)
    sidecar = await start_sidecar(**env)
    # Three more keys made after this sidecar started, as if through another replica.
    keys = early + await _keys(direct, 7, 3)
    used, unused = keys[:5], keys[5:]
    traffic = Conversations(sidecar.url)

    await traffic.run(http, used, 10)  # warm-up
    before = await traffic.run(http, used, REQUESTS)
    await wait_for(lambda: traffic.all_stored(db), timeout=10)
    await wait_for(lambda: _knows_keys(http, sidecar), timeout=5)

    cut = Cut(pg_proxy, how)
    cut.start()
    # Longer than a key's old fresh period, so memory has to carry every lookup.
    await asyncio.sleep(2.5)
    during = await traffic.run(http, [k for pair in zip(used, unused, strict=True)
                                      for k in pair], REQUESTS)
    checks = await _readiness(http, sidecar)
    assert checks["database"]["reachable"] is False
    assert checks["auth"]["store"].startswith("unreachable")
    assert not traffic.all_stored(db)  # the cut was real: records are waiting

    await _ownership_answers_from_memory(http, traffic)

    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(f"postgres {how}: p50 before {p50_before * 1000:.1f} ms, "
          f"during {p50_during * 1000:.1f} ms, max during {max(during) * 1000:.0f} ms")
    assert p50_during <= P50_FACTOR * p50_before, (p50_before, p50_during)

    cut.end()
    await wait_for(lambda: traffic.all_stored(db), timeout=60, interval=0.2)
    # Back to normal: a key created now works at once.
    fresh = (await _keys(direct, 10, 1))[0]
    await wait_for(lambda: _works(http, traffic, fresh), timeout=15, interval=0.2)
    await wait_for(lambda: traffic.all_stored(db), timeout=10, interval=0.2)


async def _ownership_answers_from_memory(http: aiohttp.ClientSession,
                                         traffic: Conversations) -> None:
    """Tenancy during the outage: a conversation known here is served, one this process has
    no record of is refused (fails closed), and neither waits for the database timeout."""
    known, key = next(iter(traffic.started.items()))
    for conversation, status in ((known, 200), ("unknown-conversation", 503)):
        begun = time.perf_counter()
        async with http.get(f"{traffic.url}/v1/conversations/{conversation}",
                            headers={"Authorization": f"Bearer {key.key}"}) as resp:
            assert resp.status == status, await resp.text()
        assert time.perf_counter() - begun < DB_TIMEOUT


async def _knows_keys(http: aiohttp.ClientSession, sidecar: Sidecar) -> bool:
    return bool((await _readiness(http, sidecar))["auth"]["keys"] == KEYS)


async def _works(http: aiohttp.ClientSession, traffic: Conversations, key: Key) -> bool:
    try:
        await traffic.start(http, key)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("how", ["refused", "blackhole"])
async def test_redis_cut_costs_requests_nothing_and_loses_nothing(
    how: str, start_sidecar: SidecarFactory, pg_database: dict[str, str], redis_proxy: Proxy,
    redis_prefix: str, http: aiohttp.ClientSession, base_env: dict[str, str],
) -> None:
    host, port = listen_address(redis_proxy)
    env = auth_env(pg_database, SIDECAR_PLUGINS_CHAIN=PLUGINS, REDIS_HOST=host,
                   REDIS_PORT=str(port), SIDECAR_REDIS_PREFIX=redis_prefix,
                   RATE_LIMIT_REQUESTS="100000", **PERSIST)
    db = StoreReader(pg_database)
    keys = await _keys({**base_env, **env}, 0, KEYS)
    sidecar = await start_sidecar(**env)
    used, unused = keys[:5], keys[5:]
    traffic = Conversations(sidecar.url)

    await traffic.run(http, used, 10)
    before = await traffic.run(http, used, REQUESTS)
    assert (await _readiness(http, sidecar))["ratelimit"]["backend"] == "redis"

    cut = Cut(redis_proxy, how)
    cut.start()
    during = await traffic.run(http, [k for pair in zip(used, unused, strict=True)
                                      for k in pair], REQUESTS)
    assert (await _readiness(http, sidecar))["ratelimit"]["backend"] == "fallback"

    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(f"redis {how}: p50 before {p50_before * 1000:.1f} ms, "
          f"during {p50_during * 1000:.1f} ms, max during {max(during) * 1000:.0f} ms")
    assert p50_during <= P50_FACTOR * p50_before, (p50_before, p50_during)

    cut.end()
    await wait_for(lambda: traffic.all_stored(db), timeout=30, interval=0.2)
    await wait_for(lambda: _on_redis(http, sidecar, traffic, keys[0]), timeout=10,
                   interval=0.2)
    await wait_for(lambda: traffic.all_stored(db), timeout=10, interval=0.2)


async def _on_redis(http: aiohttp.ClientSession, sidecar: Sidecar, traffic: Conversations,
                    key: Key) -> bool:
    await traffic.start(http, key)  # a request, for the limiter to try Redis again
    return bool((await _readiness(http, sidecar))["ratelimit"]["backend"] == "redis")
