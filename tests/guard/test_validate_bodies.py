"""Request validation end to end: content types, malformed JSON and body-size limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from mistralai.client import errors

from tests.conftest import MockUpstream, Sidecar, SidecarFactory

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hello"}]}
JSON_LIMIT = 4096
UPLOAD_LIMIT = 64 * 1024


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> Sidecar:
    return await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="validate,guard",
        SIDECAR_LIMITS_MAX_JSON_BODY_BYTES=str(JSON_LIMIT),
        SIDECAR_LIMITS_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
    )


async def _post(url: str, data: Any, content_type: str | None = "application/json",
                **headers: str) -> tuple[int, dict[str, Any]]:
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as http, http.post(
        url, data=data, headers=headers
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def _is_mistral_error(body: dict[str, Any], code: str) -> bool:
    return body.get("object") == "error" and body.get("code") == code and bool(body["message"])


async def _upstream_paths(mock: MockUpstream) -> list[str]:
    return [record["path"] for record in await mock.requests()]


async def test_sdk_requests_pass_validation(sidecar: Sidecar, mock_upstream: MockUpstream) -> None:
    sdk = sidecar.sdk()
    reply = await sdk.chat.complete_async(
        model="mistral-small-latest", messages=[{"role": "user", "content": "ping"}])
    assert reply.choices[0].message.content == "Echo: ping"
    uploaded = await sdk.files.upload_async(
        file={"file_name": "in.jsonl", "content": b'{"custom_id": "1", "body": {}}\n'},
        purpose="batch")
    assert uploaded.num_lines == 1
    assert await _upstream_paths(mock_upstream) == ["/v1/chat/completions", "/v1/files"]


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    "application/vnd.mistral+json",
])
async def test_json_content_types_are_accepted(sidecar: Sidecar, content_type: str) -> None:
    status, body = await _post(sidecar.url + "/v1/chat/completions", json.dumps(CHAT),
                               content_type)
    assert status == 200, body


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None,
])
async def test_json_endpoint_refuses_other_content_types_with_415(
    sidecar: Sidecar, mock_upstream: MockUpstream, content_type: str | None
) -> None:
    status, body = await _post(sidecar.url + "/v1/chat/completions", json.dumps(CHAT),
                               content_type)
    assert status == 415
    assert _is_mistral_error(body, "unsupported_media_type")
    assert "application/json" in body["message"]
    assert await mock_upstream.requests() == []


async def test_multipart_endpoint_refuses_json_with_415(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    status, body = await _post(sidecar.url + "/v1/files", json.dumps({"file": "x"}))
    assert status == 415
    assert _is_mistral_error(body, "unsupported_media_type")
    assert "multipart/form-data" in body["message"]
    assert await mock_upstream.requests() == []


@pytest.mark.parametrize("raw", [
    b'{"model": "m", "messages": [', b"{'model': 'm'}", b"not json at all",
    b'{"model": "m"} trailing', b"\xff\xfe\x00garbage", b"[" * 1500 + b"]" * 1500,
])
async def test_malformed_json_is_400(
    sidecar: Sidecar, mock_upstream: MockUpstream, raw: bytes
) -> None:
    status, body = await _post(sidecar.url + "/v1/chat/completions", raw)
    assert status == 400
    assert _is_mistral_error(body, "invalid_json")
    assert await mock_upstream.requests() == []


async def test_repeated_keys_are_400_so_guard_and_upstream_see_the_same_body(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    raw = ('{"model": "m", "messages": [{"role": "user", "content": "hi"}],'
           ' "messages": [{"role": "user", "content": "bye"}]}')
    status, body = await _post(sidecar.url + "/v1/chat/completions", raw)
    assert status == 400 and _is_mistral_error(body, "invalid_json")
    assert "repeats a key" in body["message"]
    assert await mock_upstream.requests() == []


async def test_repeated_keys_can_be_allowed(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="validate",
                                  SIDECAR_VALIDATE_REJECT_DUPLICATE_KEYS="false")
    raw = '{"model": "m", "model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    status, _ = await _post(sidecar.url + "/v1/chat/completions", raw)
    assert status == 200


async def test_literal_null_body_is_well_formed_and_left_to_upstream(sidecar: Sidecar) -> None:
    status, body = await _post(sidecar.url + "/v1/chat/completions", b"null")
    assert status == 422  # upstream's own answer: valid JSON, wrong shape
    assert body["type"] == "invalid_request_error"


async def test_several_content_type_headers_are_400(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    # Which of two Content-Types counts is ambiguous: a smuggling vector. The HTTP parser
    # already refuses it (validate checks again in case a laxer parser is ever used).
    reader, writer = await asyncio.open_connection(*_host_port(sidecar.url))
    payload = json.dumps(CHAT).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    await writer.drain()
    response = await reader.read()
    writer.close()
    assert response.split(b" ", 2)[1] == b"400"
    assert await mock_upstream.requests() == []


# --- body size: the core answers 413 before any plugin runs --------------------------------


async def test_oversize_json_with_content_length_is_413(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * JSON_LIMIT}]}
    status, body = await _post(sidecar.url + "/v1/chat/completions", json.dumps(big))
    assert status == 413
    assert _is_mistral_error(body, "request_too_large")
    assert str(JSON_LIMIT) in body["message"]
    assert await mock_upstream.requests() == []


async def _endless(chunk: bytes, produced: list[int], cap: int) -> AsyncIterator[bytes]:
    """A body that never ends by itself (stops at ``cap`` bytes as a safety net)."""
    while produced[0] < cap:
        produced[0] += len(chunk)
        yield chunk
        await asyncio.sleep(0)


async def test_oversize_chunked_json_is_413_without_waiting_for_the_end(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    produced = [0]
    cap = 256 * 1024 * 1024

    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        async for chunk in _endless(b"x" * 1024, produced, cap):
            yield chunk

    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", data=body(),
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
        assert resp.headers.get("Content-Length") is not None
        assert _is_mistral_error(await resp.json(), "request_too_large")
    assert "Content-Length" not in resp.request_info.headers
    assert produced[0] < cap  # the answer came while the body was still "endless"
    assert await mock_upstream.requests() == []


async def test_oversize_upload_with_content_length_is_413_through_the_sdk(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    with pytest.raises(errors.SDKError) as caught:
        await sidecar.sdk().files.upload_async(
            file={"file_name": "big.jsonl", "content": b"x" * (UPLOAD_LIMIT + 1)},
            purpose="batch")
    assert caught.value.status_code == 413
    assert json.loads(caught.value.body)["code"] == "request_too_large"
    assert await mock_upstream.requests() == []


def _multipart_head(boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()


async def test_oversize_chunked_upload_is_413_and_upstream_keeps_nothing(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    boundary = "sidecarboundary"
    produced = [0]

    async def body() -> AsyncIterator[bytes]:
        yield _multipart_head(boundary)
        async for chunk in _endless(b"y" * 8192, produced, 64 * 1024 * 1024):
            yield chunk

    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/files", data=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    ) as resp:
        assert resp.status == 413
        assert _is_mistral_error(await resp.json(), "request_too_large")
    # Whatever part went upstream was cut off: the mock never completed (or stored) it.
    for record in await mock_upstream.requests():
        assert record["status"] != 200
        assert record["body_size"] <= UPLOAD_LIMIT
    async with aiohttp.ClientSession() as http, http.get(
        mock_upstream.url + "/v1/files", headers={"Authorization": "Bearer mock-upstream-key"}
    ) as listing:
        assert (await listing.json())["data"] == []


async def test_upload_just_under_the_limit_goes_through_chunked(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    boundary = "sidecarboundary"
    head = _multipart_head(boundary)
    tail = f"\r\n--{boundary}--\r\n".encode()
    content = b"z" * (UPLOAD_LIMIT - len(head) - len(tail))

    async def body() -> AsyncIterator[bytes]:
        yield head
        yield content
        yield tail

    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/files", data=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["bytes"] == len(content)


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def test_deeply_nested_json_asking_for_a_stream_is_400_not_a_crash(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    # The core parses bodies that mention "stream" itself; nesting deeper than Python's
    # recursion limit must read as "not JSON" there too.
    raw = b'{"stream": true, "x": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    status, body = await _post(sidecar.url + "/v1/chat/completions", raw)
    assert status == 400
    assert _is_mistral_error(body, "invalid_json")
    assert await mock_upstream.requests() == []
