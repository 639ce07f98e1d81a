"""Oversized request heads: 431 in Mistral's shape from the door, whatever the plugins."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from mistralai.client import errors

from tests.conftest import MockUpstream, Sidecar, SidecarFactory

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> Sidecar:
    return await start_sidecar(SIDECAR_PLUGINS_CHAIN="validate,guard",
                               SIDECAR_SERVER_MAX_HEADER_COUNT="40",
                               SIDECAR_SERVER_MAX_HEADER_BYTES="8192")


async def _chat(sidecar: Sidecar, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=CHAT, headers=headers
    ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_ordinary_headers_pass(sidecar: Sidecar) -> None:
    headers = {f"X-Trace-{i}": "v" * 100 for i in range(20)}
    status, _, _ = await _chat(sidecar, headers)
    assert status == 200


async def test_too_many_headers_is_431_in_mistral_shape(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    status, headers, raw = await _chat(sidecar, {f"X-Many-{i}": "1" for i in range(41)})
    assert status == 431
    assert headers["Content-Type"].startswith("application/json")
    body = json.loads(raw)
    assert body["object"] == "error"
    assert body["type"] == "invalid_request_error"
    assert body["code"] == "request_header_fields_too_large"
    assert "40 header lines" in body["message"]
    assert await mock_upstream.requests() == []


async def test_headers_too_large_in_total_is_431(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    # Each header is well under the per-line limit (8190 bytes); together they are not.
    status, _, raw = await _chat(sidecar, {f"X-Big-{i}": "b" * 3000 for i in range(3)})
    assert status == 431
    assert b"8192 bytes" in raw
    assert await mock_upstream.requests() == []


async def test_header_limits_apply_to_sdk_calls_too(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="validate",
                                  SIDECAR_SERVER_MAX_HEADER_COUNT="3")
    with pytest.raises(errors.SDKError) as caught:
        await sidecar.sdk().models.list_async()
    assert caught.value.status_code == 431


async def _raw_request(sidecar: Sidecar, extra: bytes) -> bytes:
    host, port = sidecar.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + extra
                 + b"Connection: close\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response


async def test_a_header_line_over_the_line_limit_is_431(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    response = await _raw_request(sidecar, b"X-Huge: " + b"h" * (17 * 1024) + b"\r\n")
    assert response.split(b" ", 2)[1] == b"431"
    assert await mock_upstream.requests() == []


async def test_more_header_lines_than_the_parser_allows_are_refused(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    lines = b"".join(b"X-L%d: 1\r\n" % i for i in range(200))
    response = await _raw_request(sidecar, lines)
    assert response.split(b" ", 2)[1] == b"431"
    assert await mock_upstream.requests() == []
