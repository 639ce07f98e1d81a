"""Network faults between the sidecar and upstream, injected with Toxiproxy's API.

A real Toxiproxy is used when ``TOXIPROXY_URL`` is set, the in-process fault proxy otherwise.
Where a fault must end between two attempts, the retrier's sleep is replaced by "remove the
toxic": the order of events is then fixed instead of raced against a timer.
"""

from __future__ import annotations

import asyncio

import pytest
from toxiproxy import Proxy, Toxiproxy

from plugins.retry import RETRIER
from tests.conftest import MockUpstream, Sidecar, SidecarFactory
from tests.resilience.resilience_probe import events
from tests.resilience.resilience_support import (
    PLUGINS,
    read_broken_stream,
    send,
    sleep_then,
    upstream_proxy,
)

# Short, for the tests about the first-byte timeout itself.
SHORT_FIRST_BYTE_TIMEOUT = 0.25
# Long enough that a loaded CI machine never times out an attempt the test needs to succeed.
ROOMY_FIRST_BYTE_TIMEOUT = 5.0


async def sidecar_through_proxy(start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
                                toxiproxy_server: Toxiproxy, first_byte_timeout: float) -> tuple[
        Sidecar, Proxy]:
    """A sidecar whose upstream traffic passes through a Toxiproxy proxy."""
    proxy, base_url = upstream_proxy(toxiproxy_server, mock_upstream.url)
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, MISTRAL_BASE_URL=base_url,
                                  SIDECAR_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS=str(first_byte_timeout))
    return sidecar, proxy


@pytest.fixture
async def through_proxy(start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
                        toxiproxy_server: Toxiproxy) -> tuple[Sidecar, Proxy]:
    """A sidecar behind a Toxiproxy proxy, with a first-byte timeout no test reaches."""
    return await sidecar_through_proxy(start_sidecar, mock_upstream, toxiproxy_server,
                                       ROOMY_FIRST_BYTE_TIMEOUT)


@pytest.fixture
async def through_proxy_short_timeout(start_sidecar: SidecarFactory,
                                      mock_upstream: MockUpstream,
                                      toxiproxy_server: Toxiproxy) -> tuple[Sidecar, Proxy]:
    """A sidecar behind a Toxiproxy proxy, with a first-byte timeout of 0.25 s."""
    return await sidecar_through_proxy(start_sidecar, mock_upstream, toxiproxy_server,
                                       SHORT_FIRST_BYTE_TIMEOUT)


def remove_toxic_on_retry(sidecar: Sidecar, proxy: Proxy, name: str) -> None:
    """Make the retrier's backoff remove toxic ``name`` instead of waiting."""
    sidecar.app[RETRIER].sleep = sleep_then(
        lambda: asyncio.to_thread(proxy.destroy_toxic, name))


async def test_latency_within_the_first_byte_timeout_is_survived(
        through_proxy: tuple[Sidecar, Proxy]) -> None:
    sidecar, proxy = through_proxy
    proxy.add_toxic(name="slow", type="latency", stream="downstream",
                    attributes={"latency": 300})
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (200, 1)
    assert reply.seconds >= 0.29


async def test_latency_beyond_the_first_byte_timeout_is_a_504_then_a_retry(
        through_proxy_short_timeout: tuple[Sidecar, Proxy]) -> None:
    sidecar, proxy = through_proxy_short_timeout
    proxy.add_toxic(name="slow", type="latency", stream="downstream",
                    attributes={"latency": 1000})
    # Every attempt times out: the caller gets the gateway timeout, after every attempt.
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (504, 3)
    assert reply.body["code"] == "upstream_timeout"

    remove_toxic_on_retry(sidecar, proxy, "slow")
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (200, 2)
    assert [e["reason"] for e in events(sidecar.app, "retry.attempt")][-1] == "timeout"


async def test_reset_connections_are_retried_and_succeed_once_the_toxic_is_gone(
        through_proxy: tuple[Sidecar, Proxy], mock_upstream: MockUpstream) -> None:
    sidecar, proxy = through_proxy
    proxy.add_toxic(name="reset", type="reset_peer", stream="upstream",
                    attributes={"timeout": 0})
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (502, 3)
    assert reply.body["code"] == "upstream_reset"

    remove_toxic_on_retry(sidecar, proxy, "reset")
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (200, 2)
    assert [e["reason"] for e in events(sidecar.app, "retry.attempt")][-1] == "reset"
    assert [r["status"] for r in await mock_upstream.requests()][-1] == 200


async def test_a_stream_cut_mid_way_is_broken_for_the_caller_not_retried(
        through_proxy: tuple[Sidecar, Proxy], mock_upstream: MockUpstream) -> None:
    sidecar, proxy = through_proxy
    await mock_upstream.settings(token_interval_ms=5, stream_tokens=40)
    # Enough for the status line, headers and a few frames; then the connection closes.
    proxy.add_toxic(name="cut", type="limit_data", stream="downstream",
                    attributes={"bytes": 1500})
    received = await read_broken_stream(sidecar.url)
    assert b"data: " in received and b"[DONE]" not in received
    assert len(await mock_upstream.requests()) == 1
    assert events(sidecar.app, "retry.attempt") == []
