"""A caller that hangs up does not get upstream's work for free.

A stream carries its usage in its last event, and a JSON answer in its body: a caller that
hangs up before then (or a stream that breaks) leaves the sidecar without the figures upstream
bills by. Without an estimate such a request would cost nothing in the budget and nothing in
the token limit while upstream charges what it generated, so a hard budget could be outrun
by reading streams and hanging up before their end. These tests hang up at chosen moments and
read what the operator sees: the budget's spend, the token limit's remaining tokens, and the
access line that marks the usage as estimated.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.auth.auth_support import call
from tests.budgets.budgets_support import (
    CHAIN,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    create_key,
    post_chat,
    run_cli,
    set_budget,
)
from tests.conftest import MockUpstream, Sidecar, SidecarFactory, wait_for

#: The sidecar's estimate: one token per three bytes of the request body, and per three
#: characters of the output relayed (at least one per output event).
BYTES_PER_TOKEN = 3
STREAM_TOKENS = 60
#: The token limit: four tokens back a second, so a debit shows for seconds.
TOKENS_PER_MINUTE = 240


async def sidecar_charging(start_sidecar: SidecarFactory, tmp_path: Path,
                           redis_env: dict[str, str], **extra: str) -> tuple[Sidecar, str]:
    """A sidecar with prices (1 USD a token), a hard daily budget of 1000 USD for alice, and
    a token limit; returns it with alice's key."""
    await after_midnight_margin()
    settings = {"SIDECAR_PLUGINS_CHAIN": f"{CHAIN},persistence",
                "SIDECAR_RATELIMIT_TOKENS_PER_MINUTE": str(TOKENS_PER_MINUTE),
                "RATE_LIMIT_REQUESTS": "1000", "SIDECAR_LOG_ACCESS": "true", **redis_env,
                **extra}
    sidecar = await start_sidecar(**budget_env(tmp_path, {}, **settings))
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--owner", "alice", "--org", "acme", "--period", "day",
                     "--limit", "1000", "--hard")
    await budgets_in_force(sidecar.url, 1)
    return sidecar, key.key


async def spent(sidecar: Sidecar) -> float:
    """What alice's budget spent today, as ``budgets list --json`` says."""
    listed = await run_cli(sidecar.env, "budgets", "list", "--json")
    assert listed.code == 0, listed.err
    (budget,) = json.loads(listed.out)
    return float(budget["spent"] or 0)


async def usage_rows(sidecar: Sidecar) -> list[dict[str, Any]]:
    """``usage --json``: one row per owner and model."""
    report = await run_cli(sidecar.env, "usage", "--json")
    assert report.code == 0, report.err
    rows: list[dict[str, Any]] = json.loads(report.out)
    return rows


def access_line(tmp_path: Path, request_id: str) -> dict[str, Any]:
    """The access line of request ``request_id``."""
    for text in (tmp_path / "sidecar.log").read_text().splitlines():
        line = json.loads(text)
        if line.get("request_id") == request_id and "status" in line:
            return line
    raise AssertionError(f"no access line for {request_id}")


def chat_body(prompt: str, stream: bool) -> bytes:
    return json.dumps({"model": "meter-a", "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


async def read_then_hang_up(url: str, key: str, body: bytes, request_id: str,
                            events: int) -> str:
    """Stream a chat, read ``events`` content events, hang up; return the text read."""
    text = ""
    session = aiohttp.ClientSession()
    try:
        response = await session.post(
            url + "/v1/chat/completions", data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "X-Request-ID": request_id})
        assert response.status == 200
        seen = 0
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: "):])
            assert not chunk.get("usage"), "the stream ended before the caller hung up"
            content = chunk["choices"][0]["delta"].get("content") or ""
            if content:
                text += content
                seen += 1
                if seen == events:
                    break
        # Hanging up: the connection closes, unread.
        response.close()
    finally:
        await session.close()
    return text


async def test_a_stream_the_caller_hangs_up_is_charged_what_it_relayed(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env)
    await mock_upstream.settings(stream_tokens=STREAM_TOKENS, token_interval_ms=40)
    prompt = "please say something long " * 8
    body = chat_body(prompt, stream=True)

    read = await read_then_hang_up(sidecar.url, key, body, "cut-short-stream-1", events=10)
    assert read

    # The estimate: the prompt from the body's size, the output from what was relayed, at
    # least what the caller read (the sidecar may have relayed a little more).
    prompt_estimate = math.ceil(len(body) / BYTES_PER_TOKEN)
    await wait_for(lambda: spent(sidecar), timeout=10)
    charged = await spent(sidecar)
    assert charged >= prompt_estimate + max(10, math.ceil(len(read) / BYTES_PER_TOKEN))
    # Not the whole answer: the sidecar stopped reading upstream when the caller left.
    full_answer = math.ceil(len("Echo: " + prompt) / BYTES_PER_TOKEN) + STREAM_TOKENS
    assert charged < prompt_estimate + full_answer

    line = access_line(tmp_path, "cut-short-stream-1")
    assert line["outcome"] == "client_disconnected"
    assert line["usage_estimated"] is True
    assert line["prompt_tokens"] == prompt_estimate
    assert line["prompt_tokens"] + line["completion_tokens"] == charged

    # The usage report counts it, as an estimate.
    (row,) = await wait_for(lambda: usage_rows(sidecar), timeout=10)
    assert (row["requests"], row["estimated"], row["total_tokens"]) == (1, 1, charged)

    # The token limit counted it too: the next answer's remaining tokens say so (give or
    # take what came back in the seconds since).
    after = await post_chat(sidecar.url, key)
    assert after.status == 200
    remaining = dict(part.split("=") for part in
                     after.headers["RateLimit"].split('"tokens";')[1].split(";"))
    assert TOKENS_PER_MINUTE - int(remaining["r"]) >= charged - 20


async def hang_up_early(url: str, key: str, body: bytes, request_id: str,
                        after: float = 0.5) -> None:
    """Send a JSON chat and hang up after ``after`` seconds, before its answer."""
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(after):
                answer = await session.post(url + "/v1/chat/completions", data=body,
                                            headers={"Authorization": f"Bearer {key}",
                                                     "Content-Type": "application/json",
                                                     "X-Request-ID": request_id})
                text = await answer.text()
        except TimeoutError:
            return
    raise AssertionError(f"the answer came before the caller hung up: {answer.status} {text}")


async def test_a_caller_that_hangs_up_before_the_answer_is_charged_what_upstream_reports(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    """Upstream generates a JSON answer whether or not its caller waits: the sidecar lets
    that exchange finish and charges the usage it reports."""
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env)
    await mock_upstream.settings(latency_ms=1500)
    body = chat_body("what would this cost " * 20, stream=False)

    await hang_up_early(sidecar.url, key, body, "cut-short-json-1")
    charged = await wait_for(lambda: spent(sidecar), timeout=10)
    line = access_line(tmp_path, "cut-short-json-1")
    assert (line["outcome"], line["upstream_status"]) == ("client_disconnected", 200)
    assert "usage_estimated" not in line
    (received,) = [r for r in await mock_upstream.requests()
                   if r["path"] == "/v1/chat/completions"]
    assert received["completed"] and not received["cancelled"]

    # Exactly what the same call reports when its caller waits for it.
    await mock_upstream.settings(latency_ms=0)
    waited = await call(sidecar.url, "POST", "/v1/chat/completions", key,
                        json=json.loads(body))
    assert charged == waited.body["usage"]["total_tokens"]


async def test_a_caller_that_hangs_up_on_an_upstream_that_never_answers_pays_its_prompt(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    """No answer within the time upstream has to start one: the prompt upstream read is
    estimated."""
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env,
                                          SIDECAR_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS="2")
    await mock_upstream.fault(action="stall", path_prefix="/v1/chat/completions")
    body = chat_body("what would this cost " * 20, stream=False)

    await hang_up_early(sidecar.url, key, body, "cut-short-json-2")
    charged = await wait_for(lambda: spent(sidecar), timeout=10)
    assert charged == math.ceil(len(body) / BYTES_PER_TOKEN)
    line = access_line(tmp_path, "cut-short-json-2")
    assert (line["outcome"], line["usage_estimated"]) == ("client_disconnected", True)


async def test_a_complete_stream_is_charged_what_it_reported_not_an_estimate(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    """Only what reached upstream is estimated: a complete stream is charged what it
    reported, exactly, and nothing is marked estimated."""
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env)
    answer = await post_chat(sidecar.url, key, stream=True)
    assert answer.status == 200
    await wait_for(lambda: spent(sidecar), timeout=10)
    # "hi": 1 prompt token, "Echo: hi" 2 completion tokens, as upstream reported them.
    assert await spent(sidecar) == 3


async def test_a_conversation_stream_the_caller_hangs_up_is_charged_what_it_relayed(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env)
    await mock_upstream.settings(stream_tokens=STREAM_TOKENS, token_interval_ms=40)
    body = json.dumps({"model": "meter-a", "stream": True,
                       "inputs": "tell me a long story " * 5}).encode()
    deltas = 0
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            sidecar.url + "/v1/conversations", data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "X-Request-ID": "cut-short-conversation-1"})
        assert response.status == 200
        async for raw in response.content:
            if raw.strip() == b"event: message.output.delta":
                deltas += 1
                if deltas == 10:
                    break
            assert raw.strip() != b"event: conversation.response.done"
        response.close()

    await wait_for(lambda: spent(sidecar), timeout=10)
    line = access_line(tmp_path, "cut-short-conversation-1")
    assert (line["outcome"], line["usage_estimated"]) == ("client_disconnected", True)
    assert line["prompt_tokens"] == math.ceil(len(body) / BYTES_PER_TOKEN)
    assert 10 <= line["completion_tokens"] < STREAM_TOKENS
    assert await spent(sidecar) == line["total_tokens"]


async def test_a_stream_upstream_breaks_off_is_charged_what_it_relayed(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env)
    await mock_upstream.settings(stream_tokens=STREAM_TOKENS, token_interval_ms=5)
    await mock_upstream.fault(action="cut_stream", path_prefix="/v1/chat/completions",
                              after_frames=8)
    body = chat_body("break this stream " * 4, stream=True)
    received = b""
    async with aiohttp.ClientSession() as session, session.post(
            sidecar.url + "/v1/chat/completions", data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "X-Request-ID": "cut-short-broken-1"}) as response:
        assert response.status == 200
        try:
            async for raw in response.content:
                received += raw
        except aiohttp.ClientPayloadError:
            pass  # the sidecar cut the connection: the caller must not take it as complete
    assert b"[DONE]" not in received

    await wait_for(lambda: spent(sidecar), timeout=10)
    line = access_line(tmp_path, "cut-short-broken-1")
    assert (line["outcome"], line["usage_estimated"]) == ("upstream_broken", True)
    assert line["prompt_tokens"] == math.ceil(len(body) / BYTES_PER_TOKEN)
    # What was relayed before the break (a reset may discard the last frames in flight).
    assert 0 <= line["completion_tokens"] <= 8
    assert await spent(sidecar) == line["total_tokens"]


async def test_callers_that_leave_hold_at_most_a_quarter_of_the_upstream_connections(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    """Leaving must not be a way around the concurrency caps: past a quarter of the
    upstream connections, a caller's exchange goes with it and is estimated."""
    # Small holds: the three requests fit the budget together.
    # Room for the three together in the token limit too.
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env,
                                          SIDECAR_UPSTREAM_MAX_CONNECTIONS="4",
                                          SIDECAR_BUDGETS_RESERVE_OUTPUT_TOKENS="1",
                                          SIDECAR_RATELIMIT_TOKENS_PER_MINUTE="100000")
    await mock_upstream.settings(latency_ms=1500)
    body = chat_body("what would this cost " * 20, stream=False)
    await asyncio.gather(*(hang_up_early(sidecar.url, key, body, f"cut-short-many-{i}")
                           for i in range(3)))

    async def all_ended() -> list[dict[str, Any]]:
        found = []
        for i in range(3):
            try:
                found.append(access_line(tmp_path, f"cut-short-many-{i}"))
            except AssertionError:
                return []
        return found

    lines = await wait_for(all_ended, timeout=10)
    assert sorted(bool(line.get("usage_estimated")) for line in lines) == [False, True, True]
    cancelled = [r for r in await mock_upstream.requests() if r["cancelled"]]
    assert len(cancelled) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_answer_the_caller_asked_compressed_is_still_charged(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str], stream: bool) -> None:
    """A caller's ``Accept-Encoding: gzip`` (httpx, under the mistralai SDK, sends it)
    must not hide an answer's usage from the sidecar: upstream is asked for it plain."""
    sidecar, key = await sidecar_charging(start_sidecar, tmp_path, redis_env)
    await mock_upstream.settings(gzip=True)
    async with aiohttp.ClientSession() as session, session.post(
            sidecar.url + "/v1/chat/completions", data=chat_body("hi", stream=stream),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                     "Accept-Encoding": "gzip"}) as response:
        assert response.status == 200
        await response.read()
    # "hi": 1 prompt token, "Echo: hi" 2 completion tokens, at 1 USD a token.
    assert await wait_for(lambda: spent(sidecar), timeout=10) == 3
