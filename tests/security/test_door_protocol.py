"""The protocol-level door: what a caller gets for a request the sidecar cannot read, a head
that never ends or never finishes, and what the sidecar logs about it.

Every answer the door makes is Mistral-shaped JSON with an ``X-Request-ID`` and never repeats
the caller's bytes (a key in a folded ``Authorization`` line included); slow heads are cut
after ``SIDECAR_SERVER_HEADER_TIMEOUT_SECONDS`` while idle keep-alive connections are not; a
head larger than ``SIDECAR_SERVER_MAX_HEADER_BYTES`` is refused while it is being read. Run
in-process and against ``mistral-sidecar serve``, over raw sockets.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MockProcess, Sidecar, SidecarFactory, SidecarProcess, free_port
from tests.security.door_support import (
    assert_mistral_error,
    caller_key,
    endless_head,
    exchange,
    key_secret,
    read_log_lines,
    read_response,
    request_head,
    trickle,
)

KEY = caller_key()

#: Heads no HTTP library would send, each carrying the caller's key where aiohttp quoted it.
MALFORMED: dict[str, bytes] = {
    "folded Authorization line":
        b"GET /v1/models HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer\r\n %s\r\n\r\n",
    "space inside the request target":
        b"GET /v1/models?key=%s now HTTP/1.1\r\nHost: h\r\n\r\n",
    "control character in a header value":
        b"GET /v1/models HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\x01\r\n\r\n",
    "NUL in a header value":
        b"GET /v1/models HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\x00x\r\n\r\n",
    "space inside a header name":
        b"GET /v1/models HTTP/1.1\r\nHost: h\r\nAuthorization %s: x\r\n\r\n",
    "bad protocol version":
        b"GET /v1/models HTTP/9.%s\r\nHost: h\r\n\r\n",
    "invalid chunk size":
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


def _assert_no_key(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode("latin-1", "replace") if isinstance(text, str) else text
        assert KEY.encode() not in data
        assert key_secret(KEY).encode() not in data


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory, tmp_path: Path) -> Sidecar:
    """The default chain, logging to a file, with a short header timeout and header limit."""
    return await start_sidecar(SIDECAR_DB_MIGRATE_ON_START="true",
                               SIDECAR_LOG_FILE=str(tmp_path / "sidecar.log"),
                               SIDECAR_SERVER_HEADER_TIMEOUT_SECONDS="1",
                               SIDECAR_SERVER_MAX_HEADER_BYTES="8192")


def _log_text(tmp_path: Path) -> str:
    return (tmp_path / "sidecar.log").read_text()


def _door_lines(text: str, request_id: str) -> list[dict[str, Any]]:
    return [line for line in read_log_lines(text)
            if line.get("logger") == "mistral_sidecar.door"
            and line.get("request_id") == request_id]


# --- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", list(MALFORMED))
async def test_a_malformed_request_gets_json_400_without_its_bytes(
        sidecar: Sidecar, tmp_path: Path, shape: str) -> None:
    answer = await exchange(sidecar.url, MALFORMED[shape] % KEY.encode())
    body = assert_mistral_error(answer, 400, "invalid_request")
    assert body["type"] == "invalid_request_error"
    assert answer.closed
    _assert_no_key(answer.raw)
    await asyncio.sleep(0.05)
    text = _log_text(tmp_path)
    _assert_no_key(text)
    # The refusal is logged once, with its reason and the id the caller was given.
    lines = _door_lines(text, answer.headers["x-request-id"])
    assert [line["status"] for line in lines] == [400]
    assert lines[0]["reason"]


async def test_a_request_line_that_is_not_http_gets_json_400(sidecar: Sidecar) -> None:
    answer = await exchange(sidecar.url, b"G{T /v1/models?key=%s HTTP/1.1\r\n\r\n" % KEY.encode())
    assert_mistral_error(answer, 400, "invalid_request")
    _assert_no_key(answer.raw)


async def test_a_malformed_body_that_arrives_after_its_head_fails_its_request_at_once(
        sidecar: Sidecar) -> None:
    # The head is handed to the application first; the parse error in the chunked body comes
    # later and must end the request instead of leaving it waiting for a body.
    host, port = sidecar.url.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.split("//")[1], int(port))
    try:
        writer.write(request_head(sidecar.url, "/v1/chat/completions", "POST", (
            f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n")))
        await asyncio.sleep(0.3)
        writer.write(b"zz\r\n")
        answer = await read_response(reader, timeout=3)
    finally:
        writer.close()
    assert_mistral_error(answer, 400)
    _assert_no_key(answer.raw)


async def test_a_body_whose_content_encoding_is_invalid_gets_json_400(
        sidecar: Sidecar, tmp_path: Path) -> None:
    garbage = b"\x00\x01not deflate at all" * 4
    answer = await exchange(sidecar.url, (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Encoding: deflate\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s") % (KEY.encode(), len(garbage),
                                                                  garbage))
    assert_mistral_error(answer, 400)
    _assert_no_key(answer.raw)
    await asyncio.sleep(0.05)
    _assert_no_key(_log_text(tmp_path))


# --- header timeout --------------------------------------------------------------------------


async def test_a_slowloris_head_is_cut_with_json_408(sidecar: Sidecar, tmp_path: Path) -> None:
    head = request_head(sidecar.url, "/v1/models", extra=f"Authorization: Bearer {KEY}\r\n")
    cut = await trickle(sidecar.url, head, interval=0.2, limit=8)
    # Timed from the first byte: one second, not the keep-alive timeout (an hour).
    assert 0.9 <= cut.elapsed < 4, cut
    assert cut.sent < len(head)
    assert cut.answer is not None, cut
    assert_mistral_error(cut.answer, 408, "request_timeout")
    _assert_no_key(cut.raw, _log_text(tmp_path))


async def test_idle_keep_alive_connections_are_not_cut_by_the_header_timeout(
        sidecar: Sidecar) -> None:
    host, port = sidecar.url.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.split("//")[1], int(port))
    try:
        await asyncio.sleep(1.5)  # connected, nothing sent yet: longer than the timeout
        writer.write(request_head(sidecar.url))
        assert (await read_response(reader)).status == 200
        await asyncio.sleep(1.5)  # idle between two requests
        writer.write(request_head(sidecar.url))
        assert (await read_response(reader)).status == 200
        # A head that takes a while, but less than the timeout, is served too.
        head = request_head(sidecar.url)
        writer.write(head[:10])
        await asyncio.sleep(0.6)
        writer.write(head[10:])
        assert (await read_response(reader)).status == 200
    finally:
        writer.close()


# --- header size -----------------------------------------------------------------------------


def _headers(count: int, size: int = 1024) -> str:
    return "".join(f"X-Pad-{n:03d}: {'p' * (size - 16)}\r\n" for n in range(count))


async def test_a_head_larger_than_the_limit_gets_json_431_and_is_closed(
        sidecar: Sidecar) -> None:
    # Every line is far below the per-line limit (8190 bytes); together they are not.
    big = request_head(sidecar.url, extra=_headers(12) + f"Authorization: Bearer {KEY}\r\n")
    answer = await exchange(sidecar.url, big)
    assert_mistral_error(answer, 431, "request_header_fields_too_large")
    assert answer.closed
    _assert_no_key(answer.raw)
    below = request_head(sidecar.url, extra=_headers(6) + "Connection: close\r\n")
    assert (await exchange(sidecar.url, below)).status == 200


async def test_a_head_that_never_ends_is_refused_while_it_is_read(sidecar: Sidecar) -> None:
    # 8 KiB lines: aiohttp alone would read 128 of them (1 MiB) before refusing.
    cut = await endless_head(sidecar.url, line_bytes=8192, limit_bytes=8 << 20, limit=10)
    assert cut.answer is not None, cut
    assert_mistral_error(cut.answer, 431)
    assert cut.sent < 1 << 20, cut.sent


# --- the real process ------------------------------------------------------------------------


@pytest.fixture
def ops_port() -> int:
    """The port the served sidecar also listens on for operations."""
    return free_port()


@pytest.fixture
def served(spawn_mock: Callable[..., MockProcess],
           spawn_sidecar: Callable[..., SidecarProcess], ops_port: int) -> SidecarProcess:
    """``mistral-sidecar serve`` (default chain) in front of the mock, with a 2 s header
    timeout and an ops port."""
    mock = spawn_mock()
    return spawn_sidecar(MISTRAL_BASE_URL=mock.url, SIDECAR_DB_MIGRATE_ON_START="true",
                         SIDECAR_SERVER_HEADER_TIMEOUT_SECONDS="2", SIDECAR_OPS_PORT=str(ops_port))


async def test_the_served_sidecar_echoes_and_logs_no_key_of_a_malformed_request(
        served: SidecarProcess) -> None:
    for shape in ("folded Authorization line", "space inside the request target"):
        answer = await exchange(served.url, MALFORMED[shape] % KEY.encode())
        assert_mistral_error(answer, 400, "invalid_request")
        _assert_no_key(answer.raw)
    deadline = time.monotonic() + 5
    while served.output().count("mistral_sidecar.door") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    output = served.output()
    assert output.count("mistral_sidecar.door") == 2, output
    _assert_no_key(output)


async def test_the_served_sidecar_cuts_a_byte_a_second_slowloris(
        served: SidecarProcess) -> None:
    head = request_head(served.url, "/v1/models", extra=f"Authorization: Bearer {KEY}\r\n")
    cut = await trickle(served.url, head, interval=1.0, limit=15)
    assert 1.9 <= cut.elapsed < 6, cut
    assert cut.sent <= 4
    assert cut.answer is not None, cut
    assert_mistral_error(cut.answer, 408, "request_timeout")
    _assert_no_key(cut.raw, served.output())


async def test_the_ops_port_is_served_through_the_same_door(
        served: SidecarProcess, ops_port: int) -> None:
    ops_url = f"http://127.0.0.1:{ops_port}"
    with urllib.request.urlopen(ops_url + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    answer = await exchange(ops_url, MALFORMED["folded Authorization line"] % KEY.encode())
    assert_mistral_error(answer, 400, "invalid_request")
    _assert_no_key(answer.raw)
