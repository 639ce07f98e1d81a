"""Redis failing under a running sidecar, through Toxiproxy: fail open to the in-process
limiter within the timeout and recover; or fail closed with 503."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
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
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def redis_proxy(toxiproxy_server: Toxiproxy) -> Proxy:
    """A Toxiproxy proxy in front of the test Redis."""
    return toxiproxy_server.create(upstream=f"{REDIS_HOST}:{REDIS_PORT}", name="redis",
                                   listen="127.0.0.1:0")


async def sidecar_behind(start_sidecar: SidecarFactory, proxy: Proxy, prefix: str,
                         **env: str) -> Sidecar:
    host, port = listen_address(proxy)
    return await start_sidecar(
        SIDECAR_PLUGINS=f"{PLUGIN},ratelimit", REDIS_HOST=host, REDIS_PORT=str(port),
        SIDECAR_REDIS_PREFIX=prefix, RATE_LIMIT_REQUESTS="1000",
        SIDECAR_RATELIMIT_PROBE_INTERVAL_SECONDS="0.1", **env)


async def timed_chat(http: aiohttp.ClientSession, sidecar: Sidecar
                     ) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT,
                         headers=AUTH) as response:
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
    sidecar = await start_sidecar(SIDECAR_PLUGINS=f"{PLUGIN},ratelimit",
                                  REDIS_HOST="127.0.0.1", REDIS_PORT=str(free_port()),
                                  RATE_LIMIT_REQUESTS="2")
    statuses = [(await timed_chat(http, sidecar))[0] for _ in range(3)]
    # Limits still hold, per process.
    assert statuses == [200, 200, 429]
    status, check = await readiness(http, sidecar)
    assert (status, check["backend"], check["redis"]["ok"]) == (200, "fallback", False)
