"""Requests that no HTTP client library would send, written byte for byte on a socket."""

from __future__ import annotations

from yarl import URL

from tests.security.door_support import Answer, exchange

__all__ = ["Answer", "raw_request"]


async def raw_request(base_url: str, head: str, body: bytes = b"",
                      timeout: float = 10.0) -> Answer:
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
    return await exchange(base_url, data, timeout)
