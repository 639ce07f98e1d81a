"""Fault injection through ``/__mock__/faults``: every action, matching and consumption."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from mistralai.client import Mistral

from .conftest import AUTH
from .helpers import CHAT_BODY, STREAM_BODY, add_fault, chat, eventually, logged_requests


async def test_respond_replaces_the_answer_times_times(http: TestClient) -> None:
    await add_fault(
        http,
        method="POST",
        path_prefix="/v1/chat",
        times=2,
        action="respond",
        status=503,
        headers={"Retry-After": "7"},
    )
    for _ in range(2):
        response = await chat(http)
        assert response.status == 503
        assert response.headers["Retry-After"] == "7"
        body = await response.json()
        assert body["object"] == "error" and body["message"] == "Service Unavailable"
    assert (await chat(http)).status == 200


async def test_respond_with_custom_body(http: TestClient) -> None:
    await add_fault(http, action="respond", status=429, body={"message": "slow down"})
    response = await http.get("/v1/models", headers=AUTH)
    assert response.status == 429
    assert await response.json() == {"message": "slow down"}


async def test_faults_match_method_and_prefix_in_registration_order(http: TestClient) -> None:
    await add_fault(http, method="GET", path_prefix="/v1/models", action="respond", status=500)
    await add_fault(http, path_prefix="/v1/chat", action="respond", status=502)
    await add_fault(http, path_prefix="/v1/chat", action="respond", status=504)

    assert (await http.get("/v1/agents", headers=AUTH)).status == 200
    assert (await http.post("/v1/models", headers=AUTH)).status == 405  # method differs
    assert [(await chat(http)).status for _ in range(3)] == [502, 504, 200]
    assert (await http.get("/v1/models", headers=AUTH)).status == 500
    assert (await http.get("/v1/models", headers=AUTH)).status == 200


async def test_forever_fault_until_cleared(http: TestClient) -> None:
    fault_id = await add_fault(http, times=-1, action="respond", status=500)
    assert [(await chat(http)).status for _ in range(3)] == [500, 500, 500]
    [listed] = await (await http.get("/__mock__/faults")).json()
    assert listed["id"] == fault_id and listed["hits"] == 3 and listed["times"] == -1
    assert (await http.delete("/__mock__/faults")).status == 204
    assert (await chat(http)).status == 200


async def test_fault_applies_before_authentication(http: TestClient) -> None:
    await add_fault(http, action="respond", status=503)
    assert (await http.get("/v1/models")).status == 503


async def test_drop_closes_without_answer(http: TestClient) -> None:
    await add_fault(http, action="drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await chat(http)
    assert (await chat(http)).status == 200
    first = (await logged_requests(http))[0]
    assert first["fault"] and first["completed"] is False


async def test_delay_then_normal_answer(http: TestClient) -> None:
    await add_fault(http, action="delay", delay_ms=300)
    started = time.monotonic()
    response = await chat(http)
    assert response.status == 200
    assert time.monotonic() - started >= 0.3


async def test_stall_never_answers_and_logs_the_cancellation(http: TestClient) -> None:
    await add_fault(http, action="stall")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(chat(http), timeout=0.3)

    async def cancelled() -> bool:
        records = await logged_requests(http)
        return bool(records) and records[0]["cancelled"]

    await eventually(cancelled)
    assert (await chat(http)).status == 200


async def test_cut_stream_sends_some_frames_then_breaks(http: TestClient) -> None:
    await add_fault(http, path_prefix="/v1/chat", action="cut_stream", after_frames=2)
    response = await chat(http, STREAM_BODY)
    assert response.status == 200
    frames = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async for line in response.content:
            if line.startswith(b"data: "):
                frames.append(line)
    assert len(frames) == 2


async def test_cut_stream_breaks_the_sdk_stream(sdk: Mistral, http: TestClient) -> None:
    await add_fault(http, action="cut_stream", after_frames=3)
    stream = await sdk.chat.stream_async(
        model="mistral-small-latest", messages=CHAT_BODY["messages"]
    )
    received = []
    with pytest.raises(Exception) as caught:  # httpx's protocol error, whatever its module
        async for event in stream:
            received.append(event)
    assert len(received) == 3
    assert "incomplete" in str(caught.value).lower() or caught.type.__name__.endswith("Error")


async def test_cut_stream_truncates_a_json_answer(http: TestClient) -> None:
    await add_fault(http, action="cut_stream")
    response = await chat(http)
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


@pytest.mark.parametrize(
    "spec",
    [
        {"action": "explode"},
        {"action": "respond", "times": 0},
        {"action": "respond", "status": 99},
        {"action": "delay", "delay_ms": -1},
        {"action": "respond", "headers": ["x"]},
    ],
)
async def test_invalid_fault_is_rejected(http: TestClient, spec: dict[str, object]) -> None:
    response = await http.post("/__mock__/faults", json=spec)
    assert response.status == 400
    assert (await http.get("/__mock__/faults")).status == 200
    assert await (await http.get("/__mock__/faults")).json() == []


async def test_one_fault_can_be_removed_by_id(http: TestClient) -> None:
    fault_id = await add_fault(http, action="respond", status=500)
    assert (await http.delete(f"/__mock__/faults/{fault_id}")).status == 204
    assert (await chat(http)).status == 200
    assert (await http.delete(f"/__mock__/faults/{fault_id}")).status == 404


async def test_latency_also_delays_injected_answers(http: TestClient) -> None:
    await http.put("/__mock__/settings", json={"latency_ms": 200})
    await add_fault(http, action="respond", status=500)
    started = time.monotonic()
    assert (await chat(http)).status == 500
    assert time.monotonic() - started >= 0.2
