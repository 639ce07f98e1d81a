"""Never on the hot path, never lost: PostgreSQL cut by a fault proxy during traffic, a full
spool, SIGTERM and kill -9 of a sidecar process holding unwritten records."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from toxiproxy import Proxy, Toxiproxy

from plugins.persistence.spool import Spool
from proxy.app import PLUGINS as CHAIN
from tests.conftest import PG_HOST, PG_PORT, MockUpstream, SidecarFactory, SidecarProcess, wait_for
from tests.persistence.persistence_helpers import MODEL, PLUGINS, StoreReader, persist_env
from tests.persistence.persistence_probe import events
from tests.support.toxiproxy_fixture import listen_address

AUTH = {"Authorization": "Bearer caller-key"}
#: Short timeouts so an outage is noticed, and recovery tried, quickly.
FAST = {"SIDECAR_DB_TIMEOUT_SECONDS": "0.5", "SIDECAR_PERSISTENCE_RETRY_MAX_SECONDS": "0.2",
        "SIDECAR_PERSISTENCE_WRITE_TIMEOUT_SECONDS": "2"}


@pytest.fixture
def pg_proxy(toxiproxy_server: Toxiproxy, pg_database: dict[str, str]) -> Proxy:
    """A fault proxy in front of PostgreSQL."""
    return toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="postgres",
                                   listen="127.0.0.1:0")


@pytest.fixture
def via_proxy(pg_proxy: Proxy, pg_database: dict[str, str]) -> dict[str, str]:
    """DB_* environment reaching the test database through the fault proxy."""
    host, port = listen_address(pg_proxy)
    return {**pg_database, "DB_HOST": host, "DB_PORT": str(port)}


@pytest.fixture
def db(pg_database: dict[str, str]) -> StoreReader:
    """The database read directly, not through the fault proxy."""
    return StoreReader(pg_database)


class Traffic:
    """Chat completions and conversation turns against one sidecar, remembering what was sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conversations: dict[str, int] = {}
        self.requests = 0

    async def chat(self, http: aiohttp.ClientSession, text: str = "hello") -> float:
        """One chat completion; returns its latency in seconds."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        return await self._post(http, "/v1/chat/completions", body)

    async def turn(self, http: aiohttp.ClientSession, conversation_id: str | None = None) -> float:
        """Start a conversation, or append to one; returns the latency in seconds."""
        started = time.perf_counter()
        path = f"/v1/conversations/{conversation_id}" if conversation_id else "/v1/conversations"
        body: dict[str, Any] = {"inputs": "one more turn"}
        if conversation_id is None:
            body["model"] = MODEL
        async with http.post(self.url + path, json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        cid = answer["conversation_id"]
        self.conversations[cid] = self.conversations.get(cid, 0) + 2
        self.requests += 1
        return time.perf_counter() - started

    async def _post(self, http: aiohttp.ClientSession, path: str, body: Any) -> float:
        started = time.perf_counter()
        async with http.post(self.url + path, json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()
        self.requests += 1
        return time.perf_counter() - started

    async def burst(self, http: aiohttp.ClientSession, rounds: int) -> list[float]:
        """``rounds`` times: a chat completion and a turn in every known conversation."""
        latencies = []
        for index in range(rounds):
            latencies.append(await self.chat(http, f"message {index}"))
            for cid in list(self.conversations):
                latencies.append(await self.turn(http, cid))
        return latencies

    def all_stored(self, db: StoreReader) -> bool:
        """Whether every request and every entry is in the database (and nothing twice)."""
        if db.count("SELECT COUNT(*) AS n FROM usage_log") != self.requests:
            return False
        for cid, expected in self.conversations.items():
            rows = db.entries(cid)
            if [r["seq"] for r in rows] != list(range(1, expected + 1)):
                return False
        return True


def spooled_records(data_dir: str) -> int:
    """Records currently in the spool files of a data directory."""
    folder = Path(data_dir) / "spool" / "persistence"
    return sum(1 for path in folder.rglob("*.jsonl") for _record in Spool.iter_records(path))


async def readiness(url: str) -> dict[str, Any]:
    """The persistence entry of /readyz."""
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
        body = await resp.json()
    report: dict[str, Any] = body["checks"]["persistence"]
    return report


async def test_outage_adds_no_latency_and_loses_nothing(
    start_sidecar: SidecarFactory, via_proxy: dict[str, str], pg_proxy: Proxy, db: StoreReader
) -> None:
    sidecar = await start_sidecar(**persist_env(
        via_proxy, SIDECAR_PLUGINS_CHAIN=f"{PLUGINS},tests.persistence.persistence_probe", **FAST))
    traffic = Traffic(sidecar.url)
    async with aiohttp.ClientSession() as http:
        await traffic.turn(http)
        await traffic.turn(http)
        before = await traffic.burst(http, 20)
        await wait_for(lambda: traffic.all_stored(db))

        pg_proxy.disable()
        during = await traffic.burst(http, 20)
        report = await wait_for(lambda: _unwritable(sidecar.url), timeout=10)
        assert report["queue_depth"] > 0 and report["spool_bytes"] > 0 and report["ok"]
        gauges = {name: value for _plugin, found in sidecar.app[CHAIN].call_all(
            "gauges", app=sidecar.app) for name, _labels, value in found or ()}
        assert gauges["persistence_database_writable"] == 0
        assert gauges["persistence_queue_depth"] > 0 and gauges["persistence_spool_bytes"] > 0
        assert gauges["persistence_write_failures_total"] >= 1
        assert spooled_records(sidecar.env["SIDECAR_SERVER_DATA_DIR"]) >= report["queue_depth"]
        assert not traffic.all_stored(db)
        during += await traffic.burst(http, 10)

        p50_before, p50_during = statistics.median(before), statistics.median(during)
        assert p50_during <= 2 * p50_before + 0.05, (p50_before, p50_during)

        pg_proxy.enable()
        await wait_for(lambda: traffic.all_stored(db), timeout=30)
        after = await traffic.burst(http, 2)
        assert len(after) == 6
        await wait_for(lambda: traffic.all_stored(db), timeout=10)

    assert events(sidecar.app, "persistence.write_failed")
    assert events(sidecar.app, "persistence.spooled")[0]["records"] > 0
    replayed = await wait_for(lambda: events(sidecar.app, "persistence.replayed"))
    assert replayed[0]["records"] >= 3 * 30 - 1
    report = await readiness(sidecar.url)
    assert report["database_writable"] and report["queue_depth"] == 0
    assert report["spool_bytes"] == 0


async def _unwritable(url: str) -> dict[str, Any] | None:
    report = await readiness(url)
    return None if report["database_writable"] else report


async def test_full_spool_refuses_recorded_requests_until_the_database_returns(
    start_sidecar: SidecarFactory, via_proxy: dict[str, str], pg_proxy: Proxy, db: StoreReader
) -> None:
    sidecar = await start_sidecar(**persist_env(
        via_proxy, SIDECAR_PERSISTENCE_SPOOL_MAX_BYTES="1500",
        SIDECAR_PERSISTENCE_SPOOL_RETRY_AFTER_SECONDS="7", **FAST))
    traffic = Traffic(sidecar.url)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    pg_proxy.disable()
    async with aiohttp.ClientSession() as http:
        refused = None
        for _ in range(20):
            async with http.post(sidecar.url + "/v1/chat/completions", json=body,
                                 headers=AUTH) as resp:
                if resp.status == 503:
                    refused = (dict(resp.headers), await resp.json())
                    break
                assert resp.status == 200
                traffic.requests += 1
        assert refused is not None, "the spool never filled up"
        headers, error = refused
        assert headers["Retry-After"] == "7"
        assert error["object"] == "error" and error["code"] == "persistence_unavailable"
        assert traffic.requests >= 2
        # Requests that record nothing are still served; readiness says we refuse work.
        async with http.get(sidecar.url + "/v1/models", headers=AUTH) as resp:
            assert resp.status == 200
        assert (await readiness(sidecar.url))["ok"] is False

        pg_proxy.enable()
        await wait_for(lambda: traffic.all_stored(db), timeout=30)
        await wait_for(lambda: _accepting(sidecar.url), timeout=10)
        await traffic.chat(http)
        await wait_for(lambda: traffic.all_stored(db))


async def _accepting(url: str) -> bool:
    return bool((await readiness(url))["ok"])


async def test_full_spool_with_accept_policy_serves_and_keeps_records_in_memory(
    start_sidecar: SidecarFactory, via_proxy: dict[str, str], pg_proxy: Proxy, db: StoreReader
) -> None:
    sidecar = await start_sidecar(**persist_env(
        via_proxy, SIDECAR_PERSISTENCE_SPOOL_MAX_BYTES="1500",
        SIDECAR_PERSISTENCE_SPOOL_FULL_POLICY="accept", **FAST))
    traffic = Traffic(sidecar.url)
    pg_proxy.disable()
    async with aiohttp.ClientSession() as http:
        await traffic.burst(http, 15)
        report = await readiness(sidecar.url)
        assert report["ok"] and report["spool_full"]
        assert report["memory_records"] > spooled_records(sidecar.env["SIDECAR_SERVER_DATA_DIR"])
    pg_proxy.enable()
    await wait_for(lambda: traffic.all_stored(db), timeout=30)


def _spawn_env(via_proxy: dict[str, str], mock: MockUpstream, **extra: str) -> dict[str, str]:
    return persist_env(via_proxy, MISTRAL_BASE_URL=mock.url, LOG_LEVEL="WARNING", **FAST,
                       **extra)


async def test_sigterm_and_kill_9_lose_nothing_that_was_spooled(
    spawn_sidecar: Callable[..., SidecarProcess], via_proxy: dict[str, str], pg_proxy: Proxy,
    db: StoreReader, mock_upstream: MockUpstream, base_env: dict[str, str]
) -> None:
    data_dir = base_env["SIDECAR_SERVER_DATA_DIR"]
    env = _spawn_env(via_proxy, mock_upstream)
    expected = Traffic("")
    async with aiohttp.ClientSession() as http:
        # 1. SIGTERM while the database is down: the queue goes to the spool, fsync'd.
        first = await asyncio.to_thread(spawn_sidecar, **env)
        pg_proxy.disable()
        expected.url = first.url
        await expected.turn(http)
        await expected.burst(http, 5)
        first.signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.proc.wait, 20) == 0, first.output()
        after_term = spooled_records(data_dir)
        assert after_term >= expected.requests

        # 2. kill -9 while the database is down again, with new records in the spool. (This
        # process may replay some of the first one's spool while the database is briefly up.)
        second = await asyncio.to_thread(_spawn_when_db_reachable, spawn_sidecar, env,
                                         pg_proxy)
        expected.url = second.url
        await expected.burst(http, 5)
        second.signal(signal.SIGKILL)
        await asyncio.to_thread(second.proc.wait, 20)
        assert spooled_records(data_dir) >= 10
        assert db.count("SELECT COUNT(*) AS n FROM usage_log") <= expected.requests - 10

    # 3. The database is back: a new process replays the spool, every row exactly once.
    pg_proxy.enable()
    await asyncio.to_thread(spawn_sidecar, **env)
    await wait_for(lambda: expected.all_stored(db), timeout=30)
    await wait_for(lambda: spooled_records(data_dir) == 0)
    ids = db.rows("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d FROM conversation_entries")
    assert ids[0]["n"] == ids[0]["d"] == sum(expected.conversations.values())


def _spawn_when_db_reachable(spawn: Callable[..., SidecarProcess], env: dict[str, str],
                             pg_proxy: Proxy) -> SidecarProcess:
    # The store refuses to start without its database, so start with it and cut it after.
    pg_proxy.enable()
    try:
        return spawn(**env)
    finally:
        pg_proxy.disable()


async def test_sigterm_writes_the_queue_to_the_database(
    spawn_sidecar: Callable[..., SidecarProcess], pg_database: dict[str, str],
    db: StoreReader, mock_upstream: MockUpstream, base_env: dict[str, str]
) -> None:
    env = persist_env(pg_database, MISTRAL_BASE_URL=mock_upstream.url,
                      SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS="60")
    process = await asyncio.to_thread(spawn_sidecar, **env)
    traffic = Traffic(process.url)
    async with aiohttp.ClientSession() as http:
        await traffic.turn(http)
        await traffic.burst(http, 3)
    assert db.count("SELECT COUNT(*) AS n FROM usage_log") == 0
    process.signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.proc.wait, 20) == 0
    assert traffic.all_stored(db)
    assert spooled_records(base_env["SIDECAR_SERVER_DATA_DIR"]) == 0
