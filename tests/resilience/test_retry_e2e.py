"""Retries end to end: real sidecar, mock upstream, the real SDK (its own retries off) and raw
HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx2
import pytest
from mistralai.client import errors
from toxiproxy import Toxiproxy

from plugins.retry import RETRIER
from tests.conftest import MockUpstream, SidecarFactory, free_port
from tests.resilience.resilience_probe import events
from tests.resilience.resilience_support import (
    CHAT,
    CHAT_PATH,
    CHAT_STREAM,
    PLUGINS,
    jsonl_upload,
    read_broken_stream,
    sdk_without_retries,
    send,
    sleep_then,
    upstream_proxy,
)


async def test_two_503s_then_success_reaches_the_sdk_as_success(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="respond", status=503, times=2, path_prefix=CHAT_PATH)
    with sdk_without_retries(sidecar.url) as sdk:
        answer = await sdk.chat.complete_async(
            model="mistral-small-latest", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "Echo: hello"
    seen = await mock_upstream.requests()
    assert [r["status"] for r in seen] == [503, 503, 200]
    retries = events(sidecar.app, "retry.attempt")
    assert [(e["attempt"], e["reason"]) for e in retries] == [(2, "http_503"), (3, "http_503")]
    assert all(0 <= e["delay_s"] < 0.25 for e in retries)


async def test_attempt_count_header_and_exhausted_retries(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="respond", status=502, times=2, path_prefix=CHAT_PATH)
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (200, 3)

    await mock_upstream.fault(action="respond", status=504, times=5, path_prefix=CHAT_PATH)
    reply = await send(sidecar.url)
    # Upstream's own answer, passed through once attempts run out.
    assert (reply.status, reply.attempts) == (504, 3)
    assert reply.body["object"] == "error"
    assert len(await mock_upstream.requests()) == 6


async def test_plain_500_is_not_retried(start_sidecar: SidecarFactory,
                                         mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="respond", status=500, times=1, path_prefix=CHAT_PATH)
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (500, 1)
    assert len(await mock_upstream.requests()) == 1


async def test_max_attempts_setting(start_sidecar: SidecarFactory,
                                    mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, SIDECAR_RETRY_MAX_ATTEMPTS="1")
    await mock_upstream.fault(action="respond", status=503, times=1, path_prefix=CHAT_PATH)
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (503, 1)


async def test_unreachable_upstream_gives_502_with_the_attempt_count(
        start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS,
                                  MISTRAL_BASE_URL=f"http://127.0.0.1:{free_port()}")
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (502, 3)
    assert reply.body["code"] == "upstream_unreachable"
    reasons = [e["reason"] for e in events(sidecar.app, "retry.attempt")]
    assert reasons == ["connect", "connect"]


async def test_429_retry_after_is_honoured(start_sidecar: SidecarFactory,
                                           mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="respond", status=429, times=1, path_prefix=CHAT_PATH,
                              headers={"retry-after-ms": "150", "Retry-After": "1"})
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (200, 2)
    assert reply.seconds >= 0.14  # the wait was upstream's 150 ms, not a jittered 25 ms
    assert events(sidecar.app, "retry.attempt")[0]["delay_s"] == 0.15


async def test_429_asking_for_too_long_goes_straight_back_to_the_caller(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS,
                                  SIDECAR_RETRY_RETRY_AFTER_CAP_SECONDS="5")
    await mock_upstream.fault(action="respond", status=429, times=1, path_prefix=CHAT_PATH,
                              headers={"Retry-After": "60"})
    reply = await send(sidecar.url)
    assert (reply.status, reply.attempts) == (429, 1)
    assert reply.headers["Retry-After"] == "60" and reply.seconds < 2


# --- calls that create state upstream ---------------------------------------------------------


async def test_conversation_start_is_not_retried_after_a_502(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="respond", status=502, times=1,
                              path_prefix="/v1/conversations")
    with sdk_without_retries(sidecar.url) as sdk, pytest.raises(errors.SDKError) as caught:
        await sdk.beta.conversations.start_async(model="mistral-small-latest", inputs="hi")
    assert caught.value.status_code == 502
    assert caught.value.headers["X-Sidecar-Attempts"] == "1"
    assert len(await mock_upstream.requests()) == 1
    assert events(sidecar.app, "retry.attempt") == []


async def test_conversation_start_is_retried_after_an_overloaded_503(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="respond", status=503, times=1,
                              path_prefix="/v1/conversations")
    with sdk_without_retries(sidecar.url) as sdk:
        started = await sdk.beta.conversations.start_async(model="mistral-small-latest",
                                                           inputs="hi")
    assert started.conversation_id.startswith("conv_")
    assert [r["status"] for r in await mock_upstream.requests()] == [503, 200]


async def test_conversation_start_is_retried_after_a_connect_failure(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        toxiproxy_server: Toxiproxy) -> None:
    proxy, base_url = upstream_proxy(toxiproxy_server, mock_upstream.url)
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS, MISTRAL_BASE_URL=base_url)
    await asyncio.to_thread(proxy.disable)
    sidecar.app[RETRIER].sleep = sleep_then(lambda: asyncio.to_thread(proxy.enable))

    with sdk_without_retries(sidecar.url) as sdk:
        started = await sdk.beta.conversations.start_async(model="mistral-small-latest",
                                                           inputs="hi")
    assert started.conversation_id.startswith("conv_")
    seen = await mock_upstream.requests()
    assert [(r["path"], r["status"]) for r in seen] == [("/v1/conversations", 200)]
    assert [e["reason"] for e in events(sidecar.app, "retry.attempt")] == ["connect"]


async def test_conversation_start_is_not_retried_after_a_dropped_connection(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="drop", times=1, path_prefix="/v1/conversations")
    reply = await send(sidecar.url, "/v1/conversations",
                       {"model": "mistral-small-latest", "inputs": "hi"})
    assert (reply.status, reply.attempts) == (502, 1)
    assert reply.body["code"] == "upstream_reset"
    assert len(await mock_upstream.requests()) == 1


async def test_non_idempotent_override_retries_conversation_start(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS,
                                  SIDECAR_RETRY_NON_IDEMPOTENT="true")
    await mock_upstream.fault(action="respond", status=502, times=1,
                              path_prefix="/v1/conversations")
    reply = await send(sidecar.url, "/v1/conversations",
                       {"model": "mistral-small-latest", "inputs": "hi"})
    assert (reply.status, reply.attempts) == (200, 2)


async def test_streamed_upload_is_never_replayed(start_sidecar: SidecarFactory,
                                                 mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS,
                                  SIDECAR_RETRY_NON_IDEMPOTENT="true")
    await mock_upstream.fault(action="respond", status=503, times=1, path_prefix="/v1/files")
    async with aiohttp.ClientSession() as session, session.post(
            sidecar.url + "/v1/files", data=jsonl_upload()) as response:
        assert response.status == 503
        assert response.headers["X-Sidecar-Attempts"] == "1"
    assert len(await mock_upstream.requests()) == 1


# --- streams ------------------------------------------------------------------------------------


async def test_stream_is_retried_before_its_first_byte(start_sidecar: SidecarFactory,
                                                       mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="respond", status=503, times=1, path_prefix=CHAT_PATH)
    reply = await send(sidecar.url, payload=CHAT_STREAM)
    assert (reply.status, reply.attempts) == (200, 2)
    assert reply.body.rstrip().endswith(b"data: [DONE]")


async def test_stream_is_never_retried_after_its_first_frame(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="cut_stream", after_frames=2, times=1,
                              path_prefix=CHAT_PATH)
    received = await read_broken_stream(sidecar.url)
    assert received.count(b"data: ") == 2 and b"[DONE]" not in received
    assert len(await mock_upstream.requests()) == 1
    assert events(sidecar.app, "retry.attempt") == []


async def test_sdk_sees_a_broken_stream_not_a_second_one(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    await mock_upstream.fault(action="cut_stream", after_frames=3, times=1,
                              path_prefix=CHAT_PATH)
    chunks = []
    with sdk_without_retries(sidecar.url) as sdk, pytest.raises(httpx2.TransportError):
        stream = await sdk.chat.stream_async(**CHAT)
        async for event in stream:
            chunks.append(event)
    assert len(chunks) == 3
    assert len(await mock_upstream.requests()) == 1
