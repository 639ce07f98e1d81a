"""The concurrency plugin end to end: caps, the queue, 503s, and slots coming back when
responses end (streams included) and when callers go away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from plugins.concurrency import POOL
from proxy.app import PLUGINS
from tests.conftest import MockUpstream, Sidecar, SidecarFactory, SidecarProcess, wait_for

CHAT: dict[str, Any] = {"model": "mistral-small-latest",
                        "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


async def post(http: aiohttp.ClientSession, url: str, key: str = "caller-key",
               body: dict[str, Any] = CHAT) -> tuple[int, dict[str, str], Any, float]:
    started = time.monotonic()
    async with http.post(url + "/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {key}"}) as response:
        data = await response.read()
        return response.status, dict(response.headers), data, time.monotonic() - started


async def upstream_saw(mock_upstream: MockUpstream, count: int) -> bool:
    return len(await mock_upstream.requests()) >= count


def gauges(sidecar: Sidecar) -> dict[str, float]:
    reported = dict(sidecar.app[PLUGINS].call_all("gauges", app=sidecar.app))["concurrency"]
    return {name: value for name, _labels, value in reported}


async def test_past_the_cap_requests_queue_then_get_503_and_a_full_queue_refuses_at_once(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        http: aiohttp.ClientSession) -> None:
    # The queue timeout leaves a loaded machine time to send the next request while the
    # queued one still waits; upstream holds the two slots longer than that.
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="concurrency",
                                  SIDECAR_CONCURRENCY_MAX_INFLIGHT="2",
                                  SIDECAR_CONCURRENCY_QUEUE_SIZE="1",
                                  SIDECAR_CONCURRENCY_QUEUE_TIMEOUT_SECONDS="1.0")
    await mock_upstream.fault(action="delay", delay_ms=2500, path_prefix="/v1/chat", times=2)
    slow = [asyncio.create_task(post(http, sidecar.url)) for _ in range(2)]
    await wait_for(lambda: sidecar.app[POOL].inflight == 2)

    queued = asyncio.create_task(post(http, sidecar.url))
    await wait_for(lambda: sidecar.app[POOL].waiting == 1)
    assert gauges(sidecar) == {"inflight_requests": 2.0, "queue_waiting": 1.0}
    status, headers, body, elapsed = await post(http, sidecar.url)
    assert (status, headers["Retry-After"]) == (503, "1")
    assert b'"code": "overloaded"' in body and b"queue is full" in body
    assert elapsed < 1.0

    status, headers, body, elapsed = await queued
    assert (status, headers["Retry-After"]) == (503, "1")
    assert b'"type": "service_unavailable"' in body and b"no slot within" in body
    assert elapsed >= 1.0
    assert [result[0] for result in await asyncio.gather(*slow)] == [200, 200]
    assert gauges(sidecar) == {"inflight_requests": 0.0, "queue_waiting": 0.0}
    assert (await post(http, sidecar.url))[0] == 200


async def test_queued_requests_are_served_in_arrival_order_as_slots_free(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="concurrency",
                                  SIDECAR_CONCURRENCY_MAX_INFLIGHT="1",
                                  SIDECAR_CONCURRENCY_QUEUE_TIMEOUT_SECONDS="10")
    await mock_upstream.settings(latency_ms=100)
    finished: list[int] = []

    async def numbered(n: int) -> None:
        status, *_ = await post(http, sidecar.url)
        assert status == 200
        finished.append(n)

    tasks = []
    for n in range(4):
        tasks.append(asyncio.create_task(numbered(n)))
        await wait_for(lambda n=n: sidecar.app[POOL].inflight + sidecar.app[POOL].waiting
                       == n + 1)
    await asyncio.gather(*tasks)
    assert finished == [0, 1, 2, 3]


async def test_a_stream_holds_its_slot_until_its_last_frame(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="concurrency",
                                  SIDECAR_CONCURRENCY_MAX_INFLIGHT="1",
                                  SIDECAR_CONCURRENCY_QUEUE_TIMEOUT_SECONDS="0.05")
    await mock_upstream.settings(token_interval_ms=60, stream_tokens=6)
    async with http.post(sidecar.url + "/v1/chat/completions", json=STREAM,
                         headers={"Authorization": "Bearer caller-key"}) as stream:
        assert stream.status == 200
        await stream.content.readline()
        assert (await post(http, sidecar.url))[0] == 503
        await stream.read()
    await wait_for(lambda: sidecar.app[POOL].inflight == 0)
    assert (await post(http, sidecar.url))[0] == 200


async def test_a_caller_at_its_own_cap_does_not_hold_up_other_callers(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="concurrency",
                                  SIDECAR_CONCURRENCY_MAX_INFLIGHT_PER_KEY="1",
                                  SIDECAR_CONCURRENCY_QUEUE_TIMEOUT_SECONDS="0.1")
    await mock_upstream.fault(action="delay", delay_ms=800, path_prefix="/v1/chat", times=1)
    busy = asyncio.create_task(post(http, sidecar.url, key="busy-key"))
    await wait_for(lambda: sidecar.app[POOL].inflight == 1)
    status, _, body, _ = await post(http, sidecar.url, key="busy-key")
    assert status == 503 and b"no slot within" in body
    assert (await post(http, sidecar.url, key="other-key"))[0] == 200
    assert (await busy)[0] == 200


async def test_callers_going_away_give_back_slots_and_queue_places(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream,
        http: aiohttp.ClientSession) -> None:
    # A real server process: it cancels the handler of a caller that disconnects.
    sidecar = spawn_sidecar(SIDECAR_PLUGINS_CHAIN="concurrency", MISTRAL_BASE_URL=mock_upstream.url,
                            SIDECAR_CONCURRENCY_MAX_INFLIGHT="1",
                            SIDECAR_CONCURRENCY_QUEUE_SIZE="1",
                            SIDECAR_CONCURRENCY_QUEUE_TIMEOUT_SECONDS="10")

    async def abandon(body: dict[str, Any], after_first_line: bool) -> None:
        async with http.post(sidecar.url + "/v1/chat/completions", json=body,
                             headers={"Authorization": "Bearer caller-key"}) as response:
            if after_first_line:
                await response.content.readline()
            response.close()

    # 1. Waiting for upstream's answer.
    await mock_upstream.fault(action="delay", delay_ms=30_000, path_prefix="/v1/chat",
                              times=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await post(http, sidecar.url)
    status, _, _, elapsed = await post(http, sidecar.url)
    assert status == 200 and elapsed < 5

    # 2. Half-way through a stream.
    await mock_upstream.settings(token_interval_ms=200, stream_tokens=50)
    await abandon(STREAM, after_first_line=True)
    await mock_upstream.settings(token_interval_ms=0, stream_tokens=8)
    status, _, _, elapsed = await post(http, sidecar.url)
    assert status == 200 and elapsed < 5

    # 3. Waiting in the queue: its place is free again for the next caller.
    await mock_upstream.fault(action="delay", delay_ms=1500, path_prefix="/v1/chat", times=1)
    seen = len(await mock_upstream.requests())
    holder = asyncio.create_task(post(http, sidecar.url))
    await wait_for(lambda: upstream_saw(mock_upstream, seen + 1))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await post(http, sidecar.url)
    queued = await post(http, sidecar.url)
    assert queued[0] == 200, queued[2]
    assert (await holder)[0] == 200
