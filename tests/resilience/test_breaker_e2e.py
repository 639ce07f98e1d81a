"""The circuit breaker end to end: upstream taken down and brought back through Toxiproxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mistralai.client import errors
from toxiproxy import Toxiproxy

from proxy.app import PLUGINS as CHAIN
from tests.conftest import MockUpstream, Sidecar, SidecarFactory
from tests.resilience.resilience_probe import events
from tests.resilience.resilience_support import (
    PLUGINS,
    sdk_without_retries,
    send,
    upstream_proxy,
)

WAIT = 0.5  # the breaker's open time here: the only real waiting in the breaker tests
SMALL_BREAKER = {
    "SIDECAR_PLUGINS_CHAIN": PLUGINS,
    "SIDECAR_BREAKER_WINDOW_SIZE": "4",
    "SIDECAR_BREAKER_MINIMUM_CALLS": "4",
    "SIDECAR_BREAKER_WAIT_SECONDS": str(WAIT),
    "SIDECAR_BREAKER_HALF_OPEN_CALLS": "2",
}


async def breaker_check(sidecar: Sidecar) -> dict[str, Any]:
    """``/readyz``'s breaker entry; the sidecar must stay ready whatever the state."""
    reply = await send(sidecar.url, "/readyz", method="GET")
    assert reply.status == 200 and reply.body["status"] == "ready"
    check: dict[str, Any] = reply.body["checks"]["breaker"]
    return check


def state_gauges(sidecar: Sidecar) -> dict[str, float]:
    """The ``breaker_state`` gauges by state label."""
    values: dict[str, float] = {}
    for _plugin, reported in sidecar.app[CHAIN].call_all("gauges", app=sidecar.app):
        for name, labels, value in reported or ():
            if name == "breaker_state":
                values[labels["state"]] = value
    return values


async def test_upstream_down_opens_fails_fast_then_half_opens_and_closes(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        toxiproxy_server: Toxiproxy) -> None:
    proxy, base_url = upstream_proxy(toxiproxy_server, mock_upstream.url)
    sidecar = await start_sidecar(MISTRAL_BASE_URL=base_url, SIDECAR_RETRY_MAX_ATTEMPTS="1",
                                  **SMALL_BREAKER)
    await asyncio.to_thread(proxy.disable)
    for _ in range(3):
        reply = await send(sidecar.url)
        assert reply.status == 502 and reply.body["code"] == "upstream_unreachable"
    assert (await breaker_check(sidecar))["state"] == "closed"  # below the minimum of 4
    reply = await send(sidecar.url)
    assert reply.status == 502

    # Upstream is back, but the breaker does not know yet: it answers by itself, at once.
    # (Only this step must happen within the wait; the checks after it do not depend on time.)
    await asyncio.to_thread(proxy.enable)
    reply = await send(sidecar.url)
    assert reply.status == 503 and reply.seconds < WAIT
    assert reply.body == {"object": "error", "type": "service_unavailable",
                          "code": "circuit_open", "message": reply.body["message"]}
    assert reply.headers["Retry-After"] == "1" and reply.attempts == 0
    assert await mock_upstream.requests() == []
    assert [e["state"] for e in events(sidecar.app, "breaker.rejected")] == ["open"]
    # The state moves on lazily, with the next call: until then it reads "open".
    check = await breaker_check(sidecar)
    assert check["state"] == "open" and check["failure_rate"] == 100.0
    assert state_gauges(sidecar) == {"closed": 0.0, "open": 1.0, "half_open": 0.0,
                                     "disabled": 0.0, "forced_open": 0.0}

    await asyncio.sleep(WAIT)
    assert (await send(sidecar.url)).status == 200
    assert (await breaker_check(sidecar))["state"] == "half_open"
    assert (await send(sidecar.url)).status == 200
    assert (await breaker_check(sidecar))["state"] == "closed"
    assert len(await mock_upstream.requests()) == 2
    transitions = [(e["from_state"], e["to_state"])
                   for e in events(sidecar.app, "breaker.transition")]
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_an_open_breaker_stops_the_retries_of_a_request(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**SMALL_BREAKER)
    await mock_upstream.fault(action="respond", status=503, times=-1)
    first = await send(sidecar.url)
    assert (first.status, first.attempts) == (503, 3)  # upstream's own 503, three times
    second = await send(sidecar.url)
    # The fourth failure opened the breaker; the retry then met the breaker, not upstream.
    assert second.status == 503 and second.body["code"] == "circuit_open"
    assert second.attempts == 1
    assert len(await mock_upstream.requests()) == 4


async def test_callers_errors_never_open_the_breaker(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**SMALL_BREAKER)
    for _ in range(6):
        reply = await send(sidecar.url, "/v1/models/no-such-model", method="GET")
        assert reply.status == 404
    check = await breaker_check(sidecar)
    assert check["state"] == "closed" and check["window_calls"] == 0


async def test_forced_open_by_configuration(start_sidecar: SidecarFactory,
                                            mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS,
                                  SIDECAR_BREAKER_STATE="forced_open",
                                  SIDECAR_BREAKER_WAIT_SECONDS="45")
    reply = await send(sidecar.url)
    assert reply.status == 503 and reply.headers["Retry-After"] == "45"
    assert (await breaker_check(sidecar))["state"] == "forced_open"
    with sdk_without_retries(sidecar.url) as sdk, pytest.raises(errors.SDKError) as caught:
        await sdk.models.list_async()
    assert caught.value.status_code == 503 and "circuit_open" in caught.value.body
    assert caught.value.headers["Retry-After"] == "45"
    assert await mock_upstream.requests() == []
