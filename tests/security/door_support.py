"""Raw-socket clients for the door tests: requests no HTTP library would send, heads sent a
byte at a time or without end, and what the sidecar answered to them.

Also a deliberately careless plugin (``tests.security.door_support``), as a plugin with a bug
might be: a request with ``X-Door-Test-Leak`` makes it log every secret setting's value and
the request's headers through aiohttp's own loggers; one with ``X-Door-Test-Crash`` makes it
raise an exception whose text holds the caller's ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext


def caller_key() -> str:
    """A well-formed sidecar caller key (``sk-sidecar-<key id>-<secret>``), new each call."""
    return f"sk-sidecar-{os.urandom(8).hex()}-{secrets.token_urlsafe(32)}"


_KEY_PREFIX = len("sk-sidecar-") + 16 + 1


def key_public_part(key: str) -> str:
    """``sk-sidecar-<key id>-``: the part of a caller key that is not secret."""
    return key[:_KEY_PREFIX]


def key_secret(key: str) -> str:
    """The secret part of a caller key (after its public key id)."""
    return key[_KEY_PREFIX:]


@dataclass
class Answer:
    """A response read off a raw connection."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes
    closed: bool = False
    elapsed: float = 0.0

    @property
    def json(self) -> Any:
        """The body as JSON (``None`` when it is not)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def parse_answer(raw: bytes) -> Answer | None:
    """The first response in ``raw`` (``None`` when there is none)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    body = rest[: int(length)] if length is not None else rest
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(rest)
    return Answer(int(status_line.split()[1]), headers, body, raw)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)


def _address(url: str) -> tuple[str, int]:
    parsed = URL(url)
    assert parsed.host is not None and parsed.port is not None
    return parsed.host, parsed.port


async def exchange(url: str, data: bytes, timeout: float = 10.0) -> Answer:
    """Send ``data`` on a new connection and read until the sidecar closes it."""
    reader, writer = await asyncio.open_connection(*_address(url))
    started = time.monotonic()
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read(-1)
    finally:
        writer.close()
    answer = parse_answer(raw)
    assert answer is not None, f"no response, only {raw!r}"
    answer.closed = True
    answer.elapsed = time.monotonic() - started
    return answer


async def read_response(reader: asyncio.StreamReader, timeout: float = 10.0) -> Answer:
    """One response with a Content-Length, leaving the connection open."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        answer = parse_answer(head)
        assert answer is not None
        body = await reader.readexactly(int(answer.headers.get("content-length", "0")))
    answer.body, answer.raw = body, head + body
    return answer


def request_head(url: str, target: str = "/healthz", method: str = "GET",
                 extra: str = "") -> bytes:
    """A well-formed request line and headers for ``url`` (keep-alive)."""
    host, port = _address(url)
    return f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()


@dataclass
class Cut:
    """How a connection that never finished its head ended."""

    answer: Answer | None
    raw: bytes
    elapsed: float
    sent: int
    ended_by: str = ""
    errors: list[str] = field(default_factory=list)


async def _send_until_answered(url: str, pieces: Any, interval: float, limit: float
                               ) -> Cut:
    reader, writer = await asyncio.open_connection(*_address(url))
    started = time.monotonic()
    sent = 0
    received = bytearray()
    ended_by = "limit"

    async def read_all() -> None:
        while chunk := await reader.read(65536):
            received.extend(chunk)

    reading = asyncio.create_task(read_all())
    try:
        for piece in pieces:
            if reading.done() or time.monotonic() - started > limit:
                break
            try:
                writer.write(piece)
                await writer.drain()
            except (ConnectionError, OSError):
                ended_by = "send failed"
                break
            sent += len(piece)
            if interval:
                await asyncio.sleep(interval)
            else:
                await asyncio.sleep(0)
        try:
            async with asyncio.timeout(max(0.1, limit - (time.monotonic() - started))):
                await asyncio.shield(reading)
            ended_by = ended_by if ended_by != "limit" else "closed by the sidecar"
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            ended_by = "reset by the sidecar"
    finally:
        reading.cancel()
        writer.close()
    return Cut(parse_answer(bytes(received)), bytes(received), time.monotonic() - started,
               sent, ended_by)


async def trickle(url: str, data: bytes, interval: float, limit: float = 30.0) -> Cut:
    """Send ``data`` one byte every ``interval`` seconds (a slowloris) until the sidecar
    answers or closes, or ``limit`` seconds pass."""
    return await _send_until_answered(url, (data[i:i + 1] for i in range(len(data))),
                                      interval, limit)


async def endless_head(url: str, line_bytes: int = 1024, limit_bytes: int = 32 << 20,
                       limit: float = 30.0) -> Cut:
    """A request line, then header lines of ``line_bytes`` each, never ending the head, until
    the sidecar answers or closes (or ``limit_bytes`` were sent)."""
    host, port = _address(url)

    def pieces() -> Any:
        yield f"GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
        filler = b"a" * (line_bytes - 16)
        for index in range(limit_bytes // line_bytes):
            yield b"X-Fill-%06d: %s\r\n" % (index, filler)

    return await _send_until_answered(url, pieces(), 0, limit)


def assert_mistral_error(answer: Answer, status: int, code: str | None = None) -> dict[str, Any]:
    """``answer`` is a Mistral-shaped JSON error with ``status`` and an ``X-Request-ID``."""
    assert answer.status == status, answer.raw[:500]
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.raw
    body = answer.json
    assert isinstance(body, dict), answer.body
    assert body["object"] == "error"
    assert set(body) == {"object", "message", "type", "code"}
    assert all(isinstance(body[k], str) and body[k] for k in ("message", "type", "code"))
    if code is not None:
        assert body["code"] == code
    assert answer.headers.get("x-request-id")
    return body


def read_log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON lines in a log's text (other lines ignored)."""
    lines = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Plugin bugs: logs secrets and headers, or raises with the caller's credentials."""
    headers = ctx.request.headers
    if "X-Door-Test-Leak" in headers:
        settings = ctx.app[SETTINGS]
        secret = {name: settings.get(name) for name, setting in settings.declared.items()
                  if setting.secret}
        logging.getLogger("aiohttp.server").error("settings %s, headers %r", secret,
                                                  dict(headers))
        logging.getLogger("aiohttp.access").warning(
            f"{ctx.request.method} {ctx.request.path_qs} {list(headers.items())}")
    if "X-Door-Test-Crash" in headers:
        raise RuntimeError(f"plugin crashed while holding {headers.get('Authorization')!r}")
