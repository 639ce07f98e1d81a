"""Redis failing under a running sidecar, through Toxiproxy: fail open to the in-process
limiter within the timeout and recover; or fail closed with 503. And what the connection to
Redis must survive without a fallback: replies arriving a byte at a time to many callers at
once, a connection dropped between requests; and what must fall back at once rather than wait
for the timeout: a connection closed in the middle of a reply, an error reply."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from toxiproxy import Proxy, Toxiproxy

from tests.conftest import REDIS_HOST, REDIS_PORT, Sidecar, SidecarFactory, free_port, wait_for
from tests.ratelimit.ratelimit_test_plugin import PLUGIN, events
from tests.support.toxiproxy_fixture import listen_address

CHAT: dict[str, Any] = {"model": "mistral-small-latest",
                        "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": "Bearer caller-key"}
# Generous against this machine's scheduling noise, tiny against a hung Redis (forever).
PROMPT = 1.0


@pytest.fixture
def redis_proxy(toxiproxy_server: Toxiproxy) -> Proxy:
    """A Toxiproxy proxy in front of the test Redis."""
    return toxiproxy_server.create(upstream=f"{REDIS_HOST}:{REDIS_PORT}", name="redis",
                                   listen="127.0.0.1:0")


async def sidecar_behind(start_sidecar: SidecarFactory, proxy: Proxy, prefix: str,
                         **env: str) -> Sidecar:
    host, port = listen_address(proxy)
    return await start_sidecar(
        SIDECAR_PLUGINS_CHAIN=f"{PLUGIN},ratelimit", REDIS_HOST=host, REDIS_PORT=str(port),
        SIDECAR_REDIS_PREFIX=prefix, RATE_LIMIT_REQUESTS="1000",
        SIDECAR_RATELIMIT_PROBE_INTERVAL_SECONDS="0.1", **env)


async def timed_chat(http: aiohttp.ClientSession, sidecar: Sidecar,
                     headers: dict[str, str] = AUTH) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT,
                         headers=headers) as response:
        await response.read()
        return response.status, dict(response.headers), time.monotonic() - started


async def readiness(http: aiohttp.ClientSession, sidecar: Sidecar) -> tuple[int, Any]:
    async with http.get(sidecar.url + "/readyz") as response:
        return response.status, (await response.json())["checks"]["ratelimit"]


async def recovered(http: aiohttp.ClientSession, sidecar: Sidecar) -> bool:
    """Send a request (recovery is noticed by a request probing Redis) and report."""
    await timed_chat(http, sidecar)
    return any(not e["active"] for e in events(sidecar.app, "ratelimit.fallback"))


async def test_redis_cut_mid_run_fails_open_within_the_timeout_then_recovers(
        start_sidecar: SidecarFactory, redis_proxy: Proxy, redis_prefix: str,
        http: aiohttp.ClientSession) -> None:
    sidecar = await sidecar_behind(start_sidecar, redis_proxy, redis_prefix)
    status, headers, _ = await timed_chat(http, sidecar)
    assert (status, headers["X-RateLimit-Remaining"]) == (200, "999")
    assert (await readiness(http, sidecar))[1]["backend"] == "redis"

    redis_proxy.disable()
    for _ in range(5):
        status, headers, elapsed = await timed_chat(http, sidecar)
        assert status == 200
        assert elapsed < PROMPT
        # The in-process limiter took over with the same limits (and a fresh count).
        assert headers["RateLimit-Policy"] == '"default";q=1000;w=60'
    assert events(sidecar.app, "ratelimit.fallback") == [
        {"active": True, "reason": "unreachable", "failure_mode": "open"}]
    status, check = await readiness(http, sidecar)
    assert status == 200
    assert (check["ok"], check["backend"], check["fallback"]) == (True, "fallback", True)

    redis_proxy.enable()
    await wait_for(lambda: recovered(http, sidecar), timeout=5)
    assert [e["active"] for e in events(sidecar.app, "ratelimit.fallback")] == [True, False]
    _, headers, _ = await timed_chat(http, sidecar)
    # Back on the shared count, which remembers the request made before the outage.
    assert int(headers["X-RateLimit-Remaining"]) < 999
    assert (await readiness(http, sidecar))[1]["backend"] == "redis"


async def test_a_hung_redis_costs_a_request_no_more_than_the_timeout(
        start_sidecar: SidecarFactory, redis_proxy: Proxy, redis_prefix: str,
        http: aiohttp.ClientSession) -> None:
    sidecar = await sidecar_behind(start_sidecar, redis_proxy, redis_prefix,
                                   SIDECAR_REDIS_TIMEOUT_MS="100")
    assert (await timed_chat(http, sidecar))[0] == 200
    # Redis still accepts connections but never answers again.
    redis_proxy.add_toxic(name="hang", type="timeout", attributes={"timeout": 0})
    status, _, elapsed = await timed_chat(http, sidecar)
    assert status == 200
    assert 0.1 <= elapsed < 0.1 + PROMPT
    for _ in range(5):
        status, _, elapsed = await timed_chat(http, sidecar)
        assert status == 200 and elapsed < 0.1 + PROMPT
    assert events(sidecar.app, "ratelimit.fallback") == [
        {"active": True, "reason": "timeout", "failure_mode": "open"}]

    redis_proxy.destroy_toxic("hang")
    await wait_for(lambda: recovered(http, sidecar), timeout=5)


async def test_fail_closed_refuses_with_503_while_redis_is_down(
        start_sidecar: SidecarFactory, redis_proxy: Proxy, redis_prefix: str,
        http: aiohttp.ClientSession) -> None:
    sidecar = await sidecar_behind(start_sidecar, redis_proxy, redis_prefix,
                                   SIDECAR_RATELIMIT_FAILURE_MODE="closed")
    assert (await timed_chat(http, sidecar))[0] == 200
    redis_proxy.disable()
    async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT,
                         headers=AUTH) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert await response.json() == {
            "object": "error", "type": "service_unavailable", "code": "rate_limiter_unavailable",
            "message": "Rate limiting is temporarily unavailable; retry shortly."}
    status, check = await readiness(http, sidecar)
    assert status == 503
    assert (check["ok"], check["failure_mode"]) == (False, "closed")

    redis_proxy.enable()
    await wait_for(lambda: recovered(http, sidecar), timeout=5)
    assert (await timed_chat(http, sidecar))[0] == 200
    assert (await readiness(http, sidecar))[0] == 200


async def test_a_sidecar_starts_without_its_redis_and_serves_in_fail_open(
        start_sidecar: SidecarFactory, http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=f"{PLUGIN},ratelimit",
                                  REDIS_HOST="127.0.0.1", REDIS_PORT=str(free_port()),
                                  RATE_LIMIT_REQUESTS="2")
    statuses = [(await timed_chat(http, sidecar))[0] for _ in range(3)]
    # Limits still hold, per process.
    assert statuses == [200, 200, 429]
    status, check = await readiness(http, sidecar)
    assert (status, check["backend"], check["redis"]["ok"]) == (200, "fallback", False)


async def test_replies_arriving_a_byte_at_a_time_reach_each_of_many_callers(
        start_sidecar: SidecarFactory, redis_proxy: Proxy, redis_prefix: str,
        http: aiohttp.ClientSession) -> None:
    # A window of an hour: no unit comes back while the test runs.
    sidecar = await sidecar_behind(start_sidecar, redis_proxy, redis_prefix,
                                   SIDECAR_REDIS_TIMEOUT_MS="5000", RATE_LIMIT_WINDOW="3600")
    redis_proxy.add_toxic(name="bytewise", type="slicer",
                          attributes={"average_size": 1, "size_variation": 0, "delay": 0})
    callers = [{"Authorization": f"Bearer caller-{i}"} for i in range(4)]
    results = await asyncio.gather(*(timed_chat(http, sidecar, headers)
                                     for _ in range(10) for headers in callers))
    assert {status for status, _, _ in results} == {200}
    for i in range(4):
        # Every caller saw its own count go down one by one: no reply reached the wrong one.
        mine = [int(h["X-RateLimit-Remaining"]) for status, h, _ in results[i::4]]
        assert sorted(mine) == list(range(990, 1000))
    assert events(sidecar.app, "ratelimit.fallback") == []


async def test_a_connection_dropped_between_requests_is_replaced_without_falling_back(
        start_sidecar: SidecarFactory, redis_proxy: Proxy, redis_prefix: str,
        http: aiohttp.ClientSession) -> None:
    sidecar = await sidecar_behind(start_sidecar, redis_proxy, redis_prefix,
                                   RATE_LIMIT_WINDOW="3600")
    assert (await timed_chat(http, sidecar))[1]["X-RateLimit-Remaining"] == "999"
    # Redis restarting, or a load balancer dropping idle connections.
    redis_proxy.disable()
    redis_proxy.enable()
    await asyncio.sleep(0.05)
    for remaining in ("998", "997"):
        status, headers, _ = await timed_chat(http, sidecar)
        assert (status, headers["X-RateLimit-Remaining"]) == (200, remaining)
    assert events(sidecar.app, "ratelimit.fallback") == []


async def test_a_connection_closed_in_the_middle_of_a_reply_falls_back_at_once(
        start_sidecar: SidecarFactory, redis_proxy: Proxy, redis_prefix: str,
        http: aiohttp.ClientSession) -> None:
    sidecar = await sidecar_behind(start_sidecar, redis_proxy, redis_prefix,
                                   SIDECAR_REDIS_TIMEOUT_MS="5000")
    assert (await timed_chat(http, sidecar))[0] == 200
    # Three bytes of the next reply get through, then Redis's side of the connection closes.
    redis_proxy.add_toxic(name="cut", type="limit_data", attributes={"bytes": 3})
    status, headers, elapsed = await timed_chat(http, sidecar)
    assert status == 200
    assert elapsed < PROMPT  # not the 5 s timeout
    assert headers["X-RateLimit-Remaining"] == "999"  # the in-process count, started afresh
    assert events(sidecar.app, "ratelimit.fallback") == [
        {"active": True, "reason": "unreachable", "failure_mode": "open"}]
    redis_proxy.destroy_toxic("cut")
    await wait_for(lambda: recovered(http, sidecar), timeout=5)
    assert int((await timed_chat(http, sidecar))[1]["X-RateLimit-Remaining"]) < 999


async def test_an_error_reply_from_redis_falls_back_instead_of_failing_the_request(
        start_sidecar: SidecarFactory, redis_env: dict[str, str], redis_prefix: str,
        http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=f"{PLUGIN},ratelimit",
                                  RATE_LIMIT_REQUESTS="5",
                                  SIDECAR_RATELIMIT_PROBE_INTERVAL_SECONDS="0.1", **redis_env)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        # Something else wrote a list where this caller's bucket belongs.
        await client.rpush(redis_prefix + "rl:{key:k-broken}:req", "x")
    finally:
        await client.aclose()
    status, headers, _ = await timed_chat(http, sidecar, {**AUTH, "X-Test-Key-Id": "k-broken"})
    assert (status, headers["RateLimit"]) == (200, '"default";r=4;t=12')
    assert events(sidecar.app, "ratelimit.fallback") == [
        {"active": True, "reason": "error", "failure_mode": "open"}]
