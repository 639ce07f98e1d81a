"""Requests sent together cannot overshoot a token limit.

Tokens are debited once a response reports its usage, so a token limit used to check only
that its bucket was not empty: forty chats sent at once all passed the check before any was
debited. Each request now takes its prompt's estimated tokens when it is admitted and
settles the difference with what upstream reported when it ends (a refund when the estimate
was high), so the limit holds for requests in flight too.
"""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp

from proxy.estimate import BYTES_PER_TOKEN
from tests.conftest import MockUpstream, SidecarFactory

MODEL = "mistral-small-latest"
PROMPT = "one two three four five six seven eight nine ten"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}).encode()
#: What a chat of PROMPT holds when admitted: its body's bytes / 3.
HELD = math.ceil(len(BODY) / BYTES_PER_TOKEN)
TOKENS_PER_MINUTE = 300


async def post(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    async with http.post(url + "/v1/chat/completions", data=BODY,
                         headers={"Authorization": "Bearer caller-key",
                                  "Content-Type": "application/json"}) as response:
        await response.read()
        return response.status, dict(response.headers)


def tokens_left(headers: dict[str, str]) -> int:
    part = headers["RateLimit"].split('"tokens";')[1]
    return int(dict(item.split("=") for item in part.split(";"))["r"])


async def test_concurrent_chats_stop_at_the_token_limit(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, backend_env: dict[str, str],
        http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="ratelimit", RATE_LIMIT_REQUESTS="1000",
                                  SIDECAR_RATELIMIT_TOKENS_PER_MINUTE=str(TOKENS_PER_MINUTE),
                                  **backend_env)
    await mock_upstream.settings(latency_ms=1000)
    replies = await asyncio.gather(*(post(http, sidecar.url) for _ in range(40)))
    served = [status for status, _ in replies if status == 200]
    # Before: all 40 went upstream, about 40 x 21 tokens against a limit of 300.
    assert 1 <= len(served) <= math.ceil(TOKENS_PER_MINUTE / HELD)
    assert {status for status, _ in replies} == {200, 429}


async def test_a_request_settles_its_hold_with_the_usage_upstream_reports(
        start_sidecar: SidecarFactory, backend_env: dict[str, str],
        http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="ratelimit", RATE_LIMIT_REQUESTS="1000",
                                  SIDECAR_RATELIMIT_TOKENS_PER_MINUTE="60000", **backend_env)
    status, first = await post(http, sidecar.url)
    assert status == 200
    # Admitted holding its estimate...
    assert tokens_left(first) == 60000 - HELD
    status, second = await post(http, sidecar.url)
    # ... and settled with what upstream reported (10 prompt + 11 completion tokens): the
    # next one sees 21 taken, not the estimate (give or take what came back meanwhile).
    assert 60000 - HELD - 21 <= tokens_left(second) <= 60000 - HELD - 21 + 5
