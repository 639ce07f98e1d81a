"""Three sidecar processes sharing one Redis enforce one limit between them, exactly."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import MockProcess, SidecarProcess

MODEL = "mistral-small-latest"
AUTH = {"Authorization": "Bearer caller-key"}
TEN_WORDS = "one two three four five six seven eight nine ten"


def three_replicas(spawn_sidecar: Callable[..., SidecarProcess], mock: MockProcess,
                   redis_env: dict[str, str], **env: str) -> list[SidecarProcess]:
    return [spawn_sidecar(SIDECAR_PLUGINS_CHAIN="ratelimit", MISTRAL_BASE_URL=mock.url,
                          **redis_env, **env) for _ in range(3)]


async def test_three_replicas_admit_exactly_the_limit_under_concurrent_load(
        spawn_sidecar: Callable[..., SidecarProcess], spawn_mock: Callable[..., MockProcess],
        redis_env: dict[str, str]) -> None:
    mock = spawn_mock()
    # A window far longer than the test, so no unit comes back while it runs. Three replicas,
    # the mock, Redis and this client share two cores: a burst of 150 requests can starve an
    # event loop for longer than the default 50 ms Redis timeout, and a replica that times out
    # rightly falls back to its own limits. This test is about the shared count, so it gives
    # Redis time to answer; the timeout itself is tested with Toxiproxy.
    replicas = three_replicas(spawn_sidecar, mock, redis_env, RATE_LIMIT_REQUESTS="50",
                              RATE_LIMIT_WINDOW="3600", SIDECAR_REDIS_TIMEOUT_MS="2000")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    urls = itertools.cycle(r.url for r in replicas)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(url: str) -> tuple[int, str]:
            async with http.post(url + "/v1/chat/completions", json=body,
                                 headers=AUTH) as response:
                await response.read()
                return response.status, response.headers.get("X-RateLimit-Remaining", "")

        results = await asyncio.gather(*(one(next(urls)) for _ in range(150)))
        for replica in replicas:
            async with http.get(replica.url + "/readyz") as ready:
                check = (await ready.json())["checks"]["ratelimit"]
            assert (check["backend"], check["fallback"]) == ("redis", False)
    assert Counter(status for status, _ in results) == {200: 50, 429: 100}
    # Each admitted request saw a different count: one shared bucket, no double-counting.
    assert sorted(int(r) for status, r in results if status == 200) == list(range(50))


async def test_token_budgets_are_shared_across_replicas_streams_included(
        spawn_sidecar: Callable[..., SidecarProcess], spawn_mock: Callable[..., MockProcess],
        redis_env: dict[str, str]) -> None:
    mock = spawn_mock()
    replicas = three_replicas(spawn_sidecar, mock, redis_env, RATE_LIMIT_REQUESTS="1000",
                              SIDECAR_RATELIMIT_TOKENS_PER_MINUTE="100")
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        # Each answer uses 21 tokens; the budget of 100 is empty after the fifth.
        for i in range(7):
            body: dict[str, Any] = {"model": MODEL, "stream": i % 2 == 0,
                                    "messages": [{"role": "user", "content": TEN_WORDS}]}
            url = replicas[i % 3].url + "/v1/chat/completions"
            async with http.post(url, json=body, headers=AUTH) as response:
                text = await response.text()
                statuses.append(response.status)
                if response.status == 429:
                    assert json.loads(text)["code"] == "token_rate_limited"
    assert statuses == [200] * 5 + [429] * 2
