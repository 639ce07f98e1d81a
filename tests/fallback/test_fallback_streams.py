"""Streams and model fallback: a stream whose model fails before it starts comes from the
fallback; a stream that started is never replayed with another model, even when it breaks."""

from __future__ import annotations

import aiohttp
import httpx2
import pytest

from tests.conftest import MockUpstream, SidecarFactory
from tests.fallback.fallback_support import (
    CHAT_PATH,
    LARGE,
    MEDIUM,
    MODEL_HEADER,
    SMALL,
    chat,
    fallback_env,
    sdk,
    user,
)
from tests.support.event_recorder import events

MESSAGES = user("stream me")


async def test_a_stream_whose_model_is_down_comes_from_the_fallback(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    async with sdk(sidecar.url) as (client, headers):
        stream = await client.chat.stream_async(model=LARGE, messages=MESSAGES)
        chunks = [event.data async for event in stream]
    assert headers.last[MODEL_HEADER] == MEDIUM
    assert {chunk.model for chunk in chunks} == {MEDIUM}
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "Echo: stream me"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert [(e["from_model"], e["to_model"]) for e in events(sidecar.app, "fallback.used")] == [
        (LARGE, MEDIUM)]


async def test_a_stream_falls_back_over_two_models_over_plain_http(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    await mock_upstream.fault(action="respond", status=429, times=-1, model=MEDIUM)
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + CHAT_PATH, json=chat(LARGE, "x y", stream=True)) as response:
        body = await response.read()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers[MODEL_HEADER] == SMALL
    assert body.rstrip().endswith(b"data: [DONE]")
    assert body.count(f'"model":"{SMALL}"'.encode()) == body.count(b'"model"') > 1


async def test_a_broken_stream_is_not_replayed_with_another_model(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    await mock_upstream.fault(action="cut_stream", after_frames=2, times=1, model=LARGE)
    received = b""
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + CHAT_PATH, json=chat(LARGE, "a b c d", stream=True)) as response:
        assert response.status == 200
        assert response.headers[MODEL_HEADER] == LARGE
        assert response.headers["X-Sidecar-Attempts"] == "1"
        with pytest.raises(aiohttp.ClientPayloadError):
            async for piece in response.content.iter_any():
                received += piece
    # What the caller saw before the break came from the large model, and nothing else.
    assert received.count(b"data: ") == 2 and b"[DONE]" not in received
    assert MEDIUM.encode() not in received
    assert len(await mock_upstream.requests()) == 1
    assert events(sidecar.app, "fallback.used") == []


async def test_the_sdk_sees_a_broken_stream_not_one_from_another_model(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    await mock_upstream.fault(action="cut_stream", after_frames=3, times=1, model=LARGE)
    chunks = []
    async with sdk(sidecar.url) as (client, _):
        with pytest.raises(httpx2.TransportError):
            stream = await client.chat.stream_async(model=LARGE, messages=MESSAGES)
            async for event in stream:
                chunks.append(event.data)
    assert len(chunks) == 3 and {chunk.model for chunk in chunks} == {LARGE}
    assert len(await mock_upstream.requests()) == 1
    assert events(sidecar.app, "fallback.used") == []


async def test_a_stream_that_starts_and_then_stalls_is_not_replayed(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    # The idle timeout cuts a started stream: too late for another model.
    sidecar = await start_sidecar(**fallback_env(SIDECAR_UPSTREAM_IDLE_TIMEOUT_SECONDS="0.3"))
    await mock_upstream.settings(token_interval_ms=2000)
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + CHAT_PATH, json=chat(LARGE, stream=True)) as response:
        assert (response.status, response.headers[MODEL_HEADER]) == (200, LARGE)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert len(await mock_upstream.requests()) == 1
    assert events(sidecar.app, "fallback.used") == []
