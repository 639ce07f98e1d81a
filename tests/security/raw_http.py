"""Requests that no HTTP client library would send: written byte for byte on a socket."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from yarl import URL


@dataclass
class RawReply:
    """A response read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


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


async def raw_request(base_url: str, head: str, body: bytes = b"",
                      timeout: float = 10.0) -> RawReply:
    """Send ``head`` (request line and headers, ``\\n``-separated, no blank line at the end)
    and ``body`` to the server at ``base_url`` on a fresh connection, and read the answer.

    ``Host`` and ``Connection: close`` are added when ``head`` has none.
    """
    url = URL(base_url)
    lines = head.strip("\n").split("\n")
    names = {line.split(":", 1)[0].strip().lower() for line in lines[1:]}
    if "host" not in names:
        lines.append(f"Host: {url.host}:{url.port}")
    if "connection" not in names:
        lines.append("Connection: close")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read(-1)
    finally:
        writer.close()
    head_bytes, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    return RawReply(int(status_line.split()[1]), headers, rest)
