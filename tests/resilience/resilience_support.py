"""Helpers shared by the end-to-end resilience tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from mistralai.client import Mistral
from mistralai.client.utils import BackoffStrategy, RetryConfig
from toxiproxy import Proxy, Toxiproxy

from tests.support.toxiproxy_fixture import listen_address

PLUGINS = "retry,breaker,keypool,tests.resilience.resilience_probe"
CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hello"}]}
CHAT_STREAM = {**CHAT, "stream": True}
#: Mock API paths that tell us what the mock received.
CHAT_PATH = "/v1/chat/completions"


@dataclass
class Reply:
    """One raw HTTP exchange with the sidecar."""

    status: int
    headers: dict[str, str]
    body: Any
    seconds: float

    @property
    def attempts(self) -> int:
        """The sidecar's ``X-Sidecar-Attempts`` header."""
        return int(self.headers["X-Sidecar-Attempts"])


async def send(url: str, path: str = CHAT_PATH, payload: Any = CHAT, method: str = "POST",
               headers: dict[str, str] | None = None) -> Reply:
    """Send one request and read the whole answer (JSON when it is JSON)."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.request(
        method, url + path, json=payload if method != "GET" else None, headers=headers
    ) as response:
        body: Any = (await response.json() if response.content_type == "application/json"
                     else await response.read())
        return Reply(response.status, dict(response.headers), body, time.monotonic() - started)


def jsonl_upload() -> aiohttp.FormData:
    """A one-line batch file as ``POST /v1/files`` takes it: a streamed multipart body."""
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", b'{"x": 1}\n', filename="data.jsonl",
                   content_type="application/octet-stream")
    return form


async def read_broken_stream(url: str) -> bytes:
    """Post a streamed chat that must start on the first attempt and then break off; what the
    caller received before the break."""
    received = b""
    async with aiohttp.ClientSession() as session, session.post(
            url + CHAT_PATH, json=CHAT_STREAM) as response:
        assert response.status == 200
        assert response.headers["X-Sidecar-Attempts"] == "1", dict(response.headers)
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in response.content.iter_any():
                received += chunk
    return received


def sdk_without_retries(url: str) -> Mistral:
    """The real SDK pointed at the sidecar, its own retries explicitly off: what we measure
    is the sidecar's behaviour."""
    off = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)
    return Mistral(api_key="caller-key", server_url=url, retry_config=off)


def upstream_proxy(toxiproxy: Toxiproxy, mock_url: str, name: str = "mistral") -> tuple[
        Proxy, str]:
    """A Toxiproxy proxy in front of the mock upstream; returns it and the base URL to give
    the sidecar as ``MISTRAL_BASE_URL``."""
    upstream = mock_url.removeprefix("http://")
    proxy = toxiproxy.create(upstream=upstream, name=name, listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    return proxy, f"http://{host}:{port}"


def upstream_keys(records: list[dict[str, Any]]) -> list[str]:
    """The bearer token of each request the mock received, oldest first."""
    keys = []
    for record in records:
        auth = next((v for k, v in record["headers"] if k.lower() == "authorization"), "")
        keys.append(auth.removeprefix("Bearer "))
    return keys


def sleep_then(action: Callable[[], Awaitable[None]]) -> Callable[[float], Awaitable[None]]:
    """A replacement for the retrier's sleep that fixes the fault instead of waiting: the next
    attempt then meets a healthy upstream, deterministically."""

    async def sleep(seconds: float) -> None:
        await action()

    return sleep
