"""Small helpers shared by the mock upstream's HTTP-level tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from .conftest import AUTH

CHAT_BODY = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}
STREAM_BODY = {**CHAT_BODY, "stream": True}


async def add_fault(http: TestClient, **spec: Any) -> str:
    """Register a fault and return its id."""
    response = await http.post("/__mock__/faults", json=spec)
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def logged_requests(http: TestClient) -> list[dict[str, Any]]:
    """The mock's request log."""
    response = await http.get("/__mock__/requests")
    return list(await response.json())


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (at most 3 s) until ``check()`` is true; the mock notices disconnects by polling."""
    async with asyncio.timeout(3.0):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


async def chat(http: TestClient, body: dict[str, Any] | None = None) -> Any:
    """POST a chat completion with the default key."""
    return await http.post("/v1/chat/completions", json=body or CHAT_BODY, headers=AUTH)
