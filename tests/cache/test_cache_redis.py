"""The cache on Redis: shared by replicas, bounded in size, and harmless when Redis is not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as redis
from cache_support import chat, create_key, start_cached, upstream_calls

from plugins.cache.backend import BackendUnavailable
from plugins.cache.entry import Entry
from plugins.cache.redis_backend import RedisBackend
from tests.conftest import REDIS_HOST, REDIS_PORT, MockUpstream, SidecarFactory, wait_for

#: The rate-limit plugin declares the redis.* settings; with no limits it stays out of the way.
CHAIN = "metrics,store,auth,ratelimit,cache"
NO_LIMITS = {"RATE_LIMIT_REQUESTS": "0", "SIDECAR_RATELIMIT_TOKENS_PER_MINUTE": "0"}


async def _cache_keys(prefix: str) -> list[bytes]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        return [key async for key in client.scan_iter(match=prefix + "cache:*")
                if not key.endswith(b"cache:index")]
    finally:
        await client.aclose()


async def test_redis_store_keeps_entries_for_their_ttl_and_drops_the_oldest(
    redis_prefix: str
) -> None:
    store = RedisBackend(REDIS_HOST, REDIS_PORT, redis_prefix, max_entries=2, timeout=1.0)
    try:
        entries = {name: Entry(name.encode(), stream=name == "b", stored_at=1.5)
                   for name in ("a", "b", "c")}
        await store.put("a", entries["a"], ttl=60)
        await store.put("b", entries["b"], ttl=60)
        assert await store.get("a") == entries["a"]
        assert await store.get("b") == entries["b"]
        assert await store.get("missing") is None
        ttl_ms = await store.client.pttl(redis_prefix + "cache:a")
        assert 0 < ttl_ms <= 60_000
        await asyncio.sleep(0.002)  # a later millisecond on Redis's clock
        await store.put("c", entries["c"], ttl=60)
        assert await store.get("a") is None
        assert await store.get("c") == entries["c"]
        assert len(await _cache_keys(redis_prefix)) == 2
    finally:
        await store.close()


async def test_two_sidecars_share_answers_through_redis(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream, redis_env: dict[str, str],
    redis_prefix: str
) -> None:
    first = await start_cached(start_sidecar, chain=CHAIN, **NO_LIMITS, **redis_env)
    second = await start_cached(start_sidecar, chain=CHAIN, **NO_LIMITS, **redis_env)
    alice = await create_key(first.env, "alice", "user", "acme")
    bob = await create_key(first.env, "bob", "admin", "globex")

    answered = await chat(first, alice)
    assert answered.headers["X-Sidecar-Cache"] == "miss"
    await wait_for(lambda: _cache_keys(redis_prefix))
    shared = await chat(second, alice)
    assert shared.headers["X-Sidecar-Cache"] == "hit" and shared.text == answered.text
    assert (await chat(second, bob)).headers["X-Sidecar-Cache"] == "miss"
    assert await upstream_calls(mock_upstream) == 2


@pytest.fixture
async def silent_redis() -> AsyncIterator[int]:
    """A port that accepts connections and never answers: Redis hung."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.close()
    server.close()


async def test_a_hung_redis_never_fails_or_stalls_requests(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream, silent_redis: int
) -> None:
    sidecar = await start_cached(
        start_sidecar, chain=CHAIN, **NO_LIMITS, REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(silent_redis), SIDECAR_REDIS_TIMEOUT_MS="50")
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    for _ in range(4):
        started = time.monotonic()
        reply = await chat(sidecar, alice)
        assert reply.status == 200, reply.text
        assert reply.headers["X-Sidecar-Cache"] == "miss"
        assert time.monotonic() - started < 1.0
    assert await upstream_calls(mock_upstream) == 4

    async with aiohttp.ClientSession() as session:
        async with session.get(sidecar.url + "/metrics") as response:
            metrics = await response.text()
        async with session.get(sidecar.url + "/readyz") as response:
            assert response.status == 200
    assert 'mistral_sidecar_events_total{event="cache.miss"} 4.0' in metrics
    assert 'mistral_sidecar_events_total{event="cache.backend_error"}' in metrics


async def test_a_failed_store_rests_before_it_is_tried_again(silent_redis: int) -> None:
    now = [0.0]
    store = RedisBackend("127.0.0.1", silent_redis, "p:", max_entries=5, timeout=0.05,
                         rest=1.0, clock=lambda: now[0])
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await store.get("k")
        assert caught.value.reason == "timeout"
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            await store.put("k", Entry(b"{}", False, 0.0), ttl=5)
        assert caught.value.reason == "resting"
        assert time.monotonic() - started < 0.01
        now[0] = 1.0
        with pytest.raises(BackendUnavailable) as caught:
            await store.get("k")
        assert caught.value.reason == "timeout"
    finally:
        await store.close()
