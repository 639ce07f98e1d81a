"""The upstream key pool end to end: the mock's request log shows which key each call used."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from plugins.keypool import KEYPOOL
from proxy.mock_upstream import MockConfig, create_mock_app
from tests.conftest import MockUpstream, SidecarFactory
from tests.resilience.resilience_probe import PASSTHROUGH_HEADER, events
from tests.resilience.resilience_support import (
    CHAT,
    CHAT_PATH,
    PLUGINS,
    jsonl_upload,
    sdk_without_retries,
    send,
    upstream_keys,
)

GOOD_KEYS = frozenset({"key-a", "key-b", "key-c"})


@pytest.fixture
async def mock_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> MockUpstream:
    """A mock upstream accepting several keys (replaces the shared single-key one here)."""
    server = await aiohttp_server(create_mock_app(MockConfig(api_keys=GOOD_KEYS)))
    return MockUpstream(url=str(server.make_url("")).rstrip("/"), server=server)


class Clock:
    """Stands in for the pool's monotonic clock so cool-downs end without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_requests_rotate_round_robin(start_sidecar: SidecarFactory,
                                           mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS,
                                  MISTRAL_API_KEY="key-a,key-b,key-c")
    with sdk_without_retries(sidecar.url) as sdk:
        for _ in range(4):
            answer = await sdk.chat.complete_async(
                model="mistral-small-latest", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "Echo: hi"
    assert upstream_keys(await mock_upstream.requests()) == ["key-a", "key-b", "key-c", "key-a"]


async def test_a_refused_key_is_skipped_while_it_cools_down(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, MISTRAL_API_KEY="bad-key,key-a",
                                  SIDECAR_KEYPOOL_COOLDOWN_SECONDS="60")
    clock = Clock()
    sidecar.app[KEYPOOL].clock = clock

    first = await send(sidecar.url)
    assert (first.status, first.attempts) == (200, 2)
    assert upstream_keys(await mock_upstream.requests()) == ["bad-key", "key-a"]
    assert events(sidecar.app, "keypool.cooldown") == [
        {"key_index": 0, "status": 401, "seconds": 60.0}]

    for _ in range(3):
        reply = await send(sidecar.url)
        assert (reply.status, reply.attempts) == (200, 1)
    assert upstream_keys(await mock_upstream.requests())[2:] == ["key-a"] * 3
    ready = await send(sidecar.url, "/readyz", method="GET")
    assert ready.status == 200
    assert ready.body["checks"]["keypool"] == {"ok": True, "keys": 2, "cooling": 1}

    clock.now += 60
    await send(sidecar.url)
    assert upstream_keys(await mock_upstream.requests())[5:] == ["bad-key", "key-a"]


async def test_a_rate_limited_key_cools_for_upstreams_retry_after(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, MISTRAL_API_KEY="key-a,key-b")
    await mock_upstream.fault(action="respond", status=429, times=1, path_prefix=CHAT_PATH,
                              headers={"Retry-After": "5"})
    reply = await send(sidecar.url)
    # The pool moved on by itself: the retry plugin saw a success, not a 429.
    assert (reply.status, reply.attempts) == (200, 2)
    assert events(sidecar.app, "retry.attempt") == []
    assert events(sidecar.app, "keypool.cooldown") == [
        {"key_index": 0, "status": 429, "seconds": 5.0}]
    assert upstream_keys(await mock_upstream.requests()) == ["key-a", "key-b"]


async def test_when_every_key_is_refused_upstreams_answer_passes_through(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, MISTRAL_API_KEY="bad-1,bad-2")
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (401, 2)
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.body["message"] == "Unauthorized"  # the mock's words, not the sidecar's
    assert upstream_keys(await mock_upstream.requests()) == ["bad-1", "bad-2"]
    # Both cooling: the next request still goes upstream, with the key that recovers first.
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (401, 1)
    assert upstream_keys(await mock_upstream.requests())[2:] == ["bad-1"]


async def test_a_callers_own_key_is_left_alone(start_sidecar: SidecarFactory,
                                               mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, MISTRAL_API_KEY="key-a,key-b")
    reply = await send(sidecar.url, headers={PASSTHROUGH_HEADER: "callers-wrong-key"})
    assert (reply.status, reply.attempts) == (401, 1)
    reply = await send(sidecar.url, headers={PASSTHROUGH_HEADER: "key-c"})
    assert reply.status == 200
    assert upstream_keys(await mock_upstream.requests()) == ["callers-wrong-key", "key-c"]
    assert events(sidecar.app, "keypool.cooldown") == []


async def test_a_streamed_upload_does_not_move_to_another_key(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, MISTRAL_API_KEY="bad-key,key-a")
    async with aiohttp.ClientSession() as session, session.post(
            sidecar.url + "/v1/files", data=jsonl_upload()) as response:
        # The body went out with the first key and cannot be sent again: upstream's refusal
        # is the honest answer. The key still cools down, so the caller's retry succeeds.
        assert response.status == 401
    reply = await send(sidecar.url, "/v1/chat/completions", CHAT)
    assert (reply.status, reply.attempts) == (200, 1)
    assert upstream_keys(await mock_upstream.requests()) == ["bad-key", "key-a"]
