"""The control API: run-time settings, reset, request log, statistics; cancellations."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient
from mistralai.client import Mistral

from .conftest import AUTH
from .helpers import STREAM_BODY, chat, eventually, logged_requests


async def test_settings_change_stream_length_and_pacing(http: TestClient) -> None:
    response = await http.put(
        "/__mock__/settings", json={"stream_tokens": 3, "token_interval_ms": 60}
    )
    assert await response.json() == {
        "latency_ms": 0.0,
        "token_interval_ms": 60.0,
        "stream_tokens": 3,
        "gzip": False,
    }
    started = time.monotonic()
    body = await (await chat(http, STREAM_BODY)).read()
    elapsed = time.monotonic() - started
    frames = [f for f in body.split(b"\n\n") if f]
    assert len(frames) == 1 + 3 + 1  # role frame, 3 content frames, [DONE]
    assert frames[-1] == b"data: [DONE]"
    assert elapsed >= 4 * 0.06  # an interval between each pair of the 5 frames


async def test_latency_setting_delays_every_api_answer(http: TestClient) -> None:
    await http.put("/__mock__/settings", json={"latency_ms": 250})
    started = time.monotonic()
    assert (await http.get("/v1/models", headers=AUTH)).status == 200
    assert time.monotonic() - started >= 0.25
    started = time.monotonic()
    assert (await http.get("/__mock__/stats")).status == 200
    assert time.monotonic() - started < 0.25  # the control API is never delayed


async def test_invalid_settings_are_rejected(http: TestClient) -> None:
    for bad in ({"latency_ms": -1}, {"stream_tokens": 0}, {"token_interval_ms": "x"}, [1]):
        assert (await http.put("/__mock__/settings", json=bad)).status == 400
    assert (await (await http.get("/__mock__/settings")).json())["stream_tokens"] == 8


async def test_reset_forgets_everything(sdk: Mistral, http: TestClient) -> None:
    await sdk.beta.agents.create_async(model="mistral-small-latest", name="gone")
    await http.put("/__mock__/settings", json={"stream_tokens": 2})
    await http.post("/__mock__/faults", json={"action": "respond", "path_prefix": "/v1/x"})

    assert (await http.post("/__mock__/reset")).status == 204

    assert await (await http.get("/__mock__/faults")).json() == []
    assert await logged_requests(http) == []
    assert (await (await http.get("/__mock__/settings")).json())["stream_tokens"] == 8
    assert await (await http.get("/v1/agents", headers=AUTH)).json() == []


async def test_request_log_keeps_headers_query_and_body_size(http: TestClient) -> None:
    body = b'{"model": "mistral-embed", "input": "abc"}'
    response = await http.post(
        "/v1/embeddings?trace=1&x=y",
        data=body,
        headers={**AUTH, "Content-Type": "application/json", "X-Custom-Header": "Kept As Is"},
    )
    assert response.status == 200
    [record] = await logged_requests(http)
    assert record["method"] == "POST" and record["path"] == "/v1/embeddings"
    assert record["query_string"] == "trace=1&x=y"
    assert ["X-Custom-Header", "Kept As Is"] in record["headers"]
    assert ["Authorization", "Bearer mock-upstream-key"] in record["headers"]
    assert record["body_size"] == len(body)
    assert record["status"] == 200 and record["completed"] is True
    assert record["cancelled"] is False


async def test_request_log_is_bounded_to_the_latest_1000(http: TestClient) -> None:
    for index in range(1005):
        await http.get(f"/v1/models?i={index}")
    records = await logged_requests(http)
    assert len(records) == 1000
    assert records[0]["query_string"] == "i=5"
    stats = await (await http.get("/__mock__/stats")).json()
    assert stats == {"total": 1005, "by_path": {"/v1/models": 1005}}


async def test_client_leaving_mid_stream_is_logged_as_cancelled(http: TestClient) -> None:
    await http.put("/__mock__/settings", json={"token_interval_ms": 100})
    response = await chat(http, STREAM_BODY)
    await response.content.readline()  # first frame arrived
    response.close()

    async def cancelled() -> bool:
        [record] = await logged_requests(http)
        return bool(record["cancelled"])

    await eventually(cancelled)
    [record] = await logged_requests(http)
    assert record["completed"] is False


async def test_client_giving_up_during_latency_is_logged_as_cancelled(http: TestClient) -> None:
    await http.put("/__mock__/settings", json={"latency_ms": 5000})
    started = time.monotonic()
    try:
        await asyncio.wait_for(http.get("/v1/models", headers=AUTH), timeout=0.2)
    except TimeoutError:
        pass

    async def cancelled() -> bool:
        records = await logged_requests(http)
        return bool(records) and bool(records[0]["cancelled"])

    await eventually(cancelled)
    assert time.monotonic() - started < 3  # noticed long before the latency ran out
