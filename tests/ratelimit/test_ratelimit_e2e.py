"""The rate-limit plugin end to end: a sidecar in front of the mock upstream, called with the
real mistralai SDK and raw aiohttp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from tests.conftest import MockUpstream, Sidecar, SidecarFactory
from tests.ratelimit.ratelimit_test_plugin import PLUGIN, events

MODEL = "mistral-small-latest"
CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": "Bearer caller-key"}
TEN_WORDS = "one two three four five six seven eight nine ten"


async def chat(http: aiohttp.ClientSession, sidecar: Sidecar, headers: dict[str, str] = AUTH,
               body: dict[str, Any] = CHAT) -> aiohttp.ClientResponse:
    async with http.post(sidecar.url + "/v1/chat/completions", json=body,
                         headers=headers) as response:
        await response.read()
        return response


def sdk(sidecar: Sidecar) -> Mistral:
    client: Mistral = sidecar.sdk("caller-key")
    return client


async def test_the_request_after_the_limit_gets_429_with_both_header_styles(
        start_sidecar: SidecarFactory, http: aiohttp.ClientSession,
        backend_env: dict[str, str]) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="ratelimit", RATE_LIMIT_REQUESTS="5",
                                  RATE_LIMIT_WINDOW="60", **backend_env)
    for remaining in (4, 3, 2, 1):
        response = await chat(http, sidecar)
        assert response.status == 200
        assert response.headers["RateLimit-Policy"] == '"default";q=5;w=60'
        assert response.headers["RateLimit"] == f'"default";r={remaining};t=12'
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["X-RateLimit-Remaining"] == str(remaining)
        assert response.headers["X-RateLimit-Reset"] == "12"
        assert "Retry-After" not in response.headers

    client = sdk(sidecar)
    reply = await client.chat.complete_async(model=MODEL, messages=CHAT["messages"])
    assert reply.choices[0].message.content == "Echo: hi"
    with pytest.raises(MistralError) as refused:
        await client.chat.complete_async(model=MODEL, messages=CHAT["messages"])
    error = refused.value
    assert error.status_code == 429
    assert json.loads(error.body) == {
        "object": "error", "type": "rate_limit_error", "code": "rate_limited",
        "message": "Rate limit exceeded: 5 requests per 60 seconds. Retry after 12 seconds."}
    headers = error.headers
    assert headers["Retry-After"] == "12"
    assert headers["RateLimit-Policy"] == '"default";q=5;w=60'
    assert headers["RateLimit"] == '"default";r=0;t=12'
    assert (headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]) == ("0", "12")

    # Another caller has its own budget.
    other = await chat(http, sidecar, headers={"Authorization": "Bearer another-key"})
    assert other.status == 200
    assert other.headers["X-RateLimit-Remaining"] == "4"


async def test_every_response_carries_the_headers(
        start_sidecar: SidecarFactory, http: aiohttp.ClientSession,
        redis_env: dict[str, str]) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="ratelimit", RATE_LIMIT_REQUESTS="100",
                                  **redis_env)
    async with http.get(sidecar.url + "/v1/models", headers=AUTH) as models:
        assert models.status == 200
        assert models.headers["RateLimit"] == '"default";r=99;t=1'
    async with http.get(sidecar.url + "/v1/files/no-such-file", headers=AUTH) as missing:
        assert missing.status == 404
        assert missing.headers["RateLimit"] == '"default";r=98;t=1'
    client = sdk(sidecar)
    stream = await client.chat.stream_async(model=MODEL, messages=CHAT["messages"])
    async with stream:
        assert stream.response.headers["X-RateLimit-Remaining"] == "97"
        assert [event async for event in stream]
    bad = await chat(http, sidecar, body={"model": MODEL})
    assert bad.status == 422
    assert bad.headers["RateLimit-Policy"] == '"default";q=100;w=60'
    assert bad.headers["X-RateLimit-Remaining"] == "96"


async def test_upstream_429_and_its_rate_limit_headers_pass_through_untouched(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        http: aiohttp.ClientSession, redis_env: dict[str, str]) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="ratelimit", RATE_LIMIT_REQUESTS="5",
                                  **redis_env)
    upstream_body = {"object": "error", "message": "Requests rate limit exceeded",
                     "type": "rate_limited", "param": None, "code": "1300"}
    upstream_headers = {"Retry-After": "7", "RateLimit": '"upstream";r=0;t=7',
                        "X-RateLimit-Remaining": "0",
                        "x-ratelimit-limit-tokens-minute": "500000"}
    await mock_upstream.fault(action="respond", status=429, path_prefix="/v1/chat",
                              headers=upstream_headers, body=upstream_body)
    async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT,
                         headers=AUTH) as response:
        assert response.status == 429
        assert await response.json() == upstream_body
        headers = response.headers
    assert headers.getall("Retry-After") == ["7"]
    assert headers.getall("RateLimit") == ['"upstream";r=0;t=7']
    assert headers.getall("X-RateLimit-Remaining") == ["0"]
    assert headers.getall("x-ratelimit-limit-tokens-minute") == ["500000"]
    # Names upstream did not send are still ours.
    assert headers["RateLimit-Policy"] == '"default";q=5;w=60'
    assert headers["X-RateLimit-Limit"] == "5"

    await mock_upstream.fault(action="respond", status=200, path_prefix="/v1/models",
                              headers={"X-RateLimit-Limit": "1000",
                                       "X-RateLimit-Reset": "30"}, body={"data": []})
    async with http.get(sidecar.url + "/v1/models", headers=AUTH) as listed:
        assert listed.status == 200
        assert listed.headers.getall("X-RateLimit-Limit") == ["1000"]
        assert listed.headers.getall("X-RateLimit-Reset") == ["30"]
        assert listed.headers["X-RateLimit-Remaining"] == "3"


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_token_limits_bite_once_usage_is_reported(
        start_sidecar: SidecarFactory, backend_env: dict[str, str], streamed: bool,
        http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="ratelimit", RATE_LIMIT_REQUESTS="100",
                                  SIDECAR_RATELIMIT_TOKENS_PER_MINUTE="30", **backend_env)
    client = sdk(sidecar)
    messages: Any = [{"role": "user", "content": TEN_WORDS}]
    # 10 prompt + 11 completion words: 21 of the 30 tokens; the next request still passes.
    for _ in range(2):
        if streamed:
            stream = await client.chat.stream_async(model=MODEL, messages=messages)
            async with stream:
                chunks = [event async for event in stream]
            assert chunks[-1].data.usage.total_tokens == 21
        else:
            reply = await client.chat.complete_async(model=MODEL, messages=messages)
            assert reply.usage.total_tokens == 21
    # 42 used of 30: 12 in debt; one token back takes 13 of them, at 2 s each.
    with pytest.raises(MistralError) as refused:
        await client.chat.complete_async(model=MODEL, messages=messages)
    error = refused.value
    assert error.status_code == 429
    assert json.loads(error.body)["code"] == "token_rate_limited"
    assert error.headers["RateLimit-Policy"] == '"default";q=100;w=60, "tokens";q=30;w=60'
    assert error.headers["RateLimit"] == '"default";r=98;t=1, "tokens";r=0;t=26'
    assert error.headers["Retry-After"] == "26"


async def test_log_only_mode_refuses_nothing_and_reports_what_it_would_refuse(
        start_sidecar: SidecarFactory, http: aiohttp.ClientSession,
        redis_env: dict[str, str]) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=f"{PLUGIN},ratelimit",
                                  RATE_LIMIT_REQUESTS="2", SIDECAR_RATELIMIT_ENFORCE="false",
                                  **redis_env)
    statuses = []
    for _ in range(4):
        response = await chat(http, sidecar)
        statuses.append(response.status)
        assert "RateLimit" not in response.headers
    assert statuses == [200] * 4
    decisions = events(sidecar.app, "ratelimit.decision")
    assert [d["allowed"] for d in decisions] == [True, True, False, False]
    assert {d["enforced"] for d in decisions} == {False}


async def test_overrides_per_role_and_per_key_from_the_config_file(
        start_sidecar: SidecarFactory, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "ratelimit:\n"
        "  requests: 2\n"
        "  overrides:\n"
        "    roles:\n"
        "      admin: {requests: 4}\n"
        "    keys:\n"
        "      k-vip: {requests: 6, window: 600}\n")
    sidecar = await start_sidecar(config_file=config, SIDECAR_PLUGINS_CHAIN=f"{PLUGIN},ratelimit")

    async def admitted(key_id: str, role: str) -> int:
        headers = {**AUTH, "X-Test-Key-Id": key_id, "X-Test-Role": role}
        return sum([(await chat(http, sidecar, headers=headers)).status == 200
                    for _ in range(8)])

    assert await admitted("k-user", "user") == 2
    assert await admitted("k-admin", "admin") == 4
    assert await admitted("k-vip", "user") == 6
    scopes = {(d["scope"], d["allowed"]) for d in events(sidecar.app, "ratelimit.decision")}
    assert scopes == {("default", True), ("default", False), ("role", True), ("role", False),
                      ("key", True), ("key", False)}
