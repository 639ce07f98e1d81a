"""Model fallback end to end: a real sidecar (fallback before retry) in front of the mock
upstream, failing per model; the real SDK and raw HTTP see the answer of the fallback."""

from __future__ import annotations

import pytest
from mistralai.client import errors

from tests.conftest import MockUpstream, SidecarFactory
from tests.fallback.fallback_support import (
    CHAT_PATH,
    LARGE,
    MEDIUM,
    MODEL_HEADER,
    OTHER,
    SMALL,
    chat,
    fallback_env,
    faulted,
    reply_text,
    sdk,
    send,
    user,
)
from tests.support.event_recorder import events


async def test_503_on_the_model_is_answered_by_its_fallback(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    down = await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    async with sdk(sidecar.url) as (client, headers):
        answer = await client.chat.complete_async(
            model=LARGE, messages=user("hello"))
    assert reply_text(answer) == "Echo: hello"
    assert answer.model == MEDIUM
    assert headers.last[MODEL_HEADER] == MEDIUM
    # Retries on the large model gave up first (two attempts), then one on medium.
    assert headers.last["X-Sidecar-Attempts"] == "3"
    records = await mock_upstream.requests()
    assert faulted(records, down["id"]) == 2 and len(records) == 3
    assert events(sidecar.app, "fallback.used") == [
        {"from_model": LARGE, "to_model": MEDIUM, "status": 503, "reason": "http_503"}]


async def test_429_falls_back_over_plain_http(start_sidecar: SidecarFactory,
                                             mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    # Upstream asks for a wait longer than the sidecar waits out: retry gives up at once.
    await mock_upstream.fault(action="respond", status=429, times=-1, model=LARGE,
                              headers={"Retry-After": "60"})
    reply = await send(sidecar.url, chat(LARGE, "one two"))
    assert reply.status == 200
    assert (reply.model, reply.body["model"]) == (MEDIUM, MEDIUM)
    assert reply.body["choices"][0]["message"]["content"] == "Echo: one two"
    assert "Retry-After" not in reply.headers
    assert reply.attempts == 2


async def test_a_400_is_not_a_reason_to_fall_back(start_sidecar: SidecarFactory,
                                                  mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    refusal = {"object": "error", "message": "bad temperature", "type": "invalid_request_error",
               "param": "temperature", "code": "1234"}
    await mock_upstream.fault(action="respond", status=400, times=-1, model=LARGE,
                              body=refusal, headers={"X-Upstream-Own": "kept"})
    reply = await send(sidecar.url, chat(LARGE))
    assert (reply.status, reply.body) == (400, refusal)
    assert reply.headers["X-Upstream-Own"] == "kept"
    assert reply.model == LARGE and reply.attempts == 1
    assert len(await mock_upstream.requests()) == 1
    assert events(sidecar.app, "fallback.used") == []

    async with sdk(sidecar.url) as (client, _):
        with pytest.raises(errors.SDKError) as caught:
            await client.chat.complete_async(model=LARGE,
                                             messages=user("hi"))
    assert caught.value.status_code == 400
    assert "bad temperature" in caught.value.body


async def test_a_plain_500_falls_back_though_retry_leaves_it_alone(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    await mock_upstream.fault(action="respond", status=500, times=-1, model=LARGE)
    reply = await send(sidecar.url, chat(LARGE))
    assert (reply.status, reply.model, reply.attempts) == (200, MEDIUM, 2)


async def test_timeout_before_the_first_byte_falls_back(start_sidecar: SidecarFactory,
                                                        mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(
        SIDECAR_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS="0.3"))
    stalled = await mock_upstream.fault(action="stall", times=-1, model=LARGE)
    async with sdk(sidecar.url) as (client, headers):
        answer = await client.chat.complete_async(
            model=LARGE, messages=user("still there"))
    assert (answer.model, headers.last[MODEL_HEADER]) == (MEDIUM, MEDIUM)
    assert reply_text(answer) == "Echo: still there"
    records = await mock_upstream.requests()
    assert faulted(records, stalled["id"]) == 2
    assert events(sidecar.app, "fallback.used") == [
        {"from_model": LARGE, "to_model": MEDIUM, "status": None, "reason": "timeout"}]


async def test_a_fallback_that_fails_too_moves_on_to_the_next(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    # large -> medium, medium -> small: a request for large ends on small.
    sidecar = await start_sidecar(**fallback_env({LARGE: [MEDIUM], MEDIUM: [SMALL]}))
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    await mock_upstream.fault(action="respond", status=502, times=-1, model=MEDIUM)
    async with sdk(sidecar.url) as (client, headers):
        answer = await client.chat.complete_async(
            model=LARGE, messages=user("anyone"))
    assert (answer.model, headers.last[MODEL_HEADER]) == (SMALL, SMALL)
    assert headers.last["X-Sidecar-Attempts"] == "5"
    assert [(e["from_model"], e["to_model"], e["status"])
            for e in events(sidecar.app, "fallback.used")] == [
        (LARGE, MEDIUM, 503), (MEDIUM, SMALL, 502)]
    # A request for medium itself goes straight to small.
    reply = await send(sidecar.url, chat(MEDIUM))
    assert (reply.status, reply.model, reply.attempts) == (200, SMALL, 3)


async def test_when_every_model_fails_the_caller_gets_the_last_error_unchanged(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    for model, status in ((LARGE, 503), (MEDIUM, 429), (SMALL, 502)):
        await mock_upstream.fault(
            action="respond", status=status, times=-1, model=model,
            headers={"X-Which": model},
            body={"object": "error", "message": f"{model} is down", "type": "overloaded",
                  "code": str(status)})
    reply = await send(sidecar.url, chat(LARGE))
    assert reply.status == 502
    assert reply.body == {"object": "error", "message": f"{SMALL} is down",
                          "type": "overloaded", "code": "502"}
    assert reply.headers["X-Which"] == SMALL
    # The model whose answer this is.
    assert reply.model == SMALL
    assert reply.attempts == 6

    async with sdk(sidecar.url) as (client, _):
        with pytest.raises(errors.SDKError) as caught:
            await client.chat.complete_async(model=LARGE,
                                             messages=user("hi"))
    assert caught.value.status_code == 502
    assert f"{SMALL} is down" in caught.value.body


async def test_when_every_model_times_out_the_caller_gets_the_timeout(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(
        {LARGE: [MEDIUM]}, SIDECAR_RETRY_MAX_ATTEMPTS="1",
        SIDECAR_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS="0.2"))
    await mock_upstream.fault(action="stall", times=-1, model=LARGE)
    await mock_upstream.fault(action="stall", times=-1, model=MEDIUM)
    reply = await send(sidecar.url, chat(LARGE))
    assert (reply.status, reply.body["code"]) == (504, "upstream_timeout")
    # Nobody answered: no model to name.
    assert reply.model is None
    assert reply.attempts == 2


async def test_a_model_without_fallbacks_is_left_alone(start_sidecar: SidecarFactory,
                                                       mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    reply = await send(sidecar.url, chat(OTHER))
    assert (reply.status, reply.model, reply.body["model"]) == (200, OTHER, OTHER)
    await mock_upstream.fault(action="respond", status=503, times=-1, model=OTHER)
    reply = await send(sidecar.url, chat(OTHER))
    assert (reply.status, reply.model, reply.attempts) == (503, OTHER, 2)
    assert events(sidecar.app, "fallback.used") == []


async def test_a_healthy_model_answers_itself_and_says_so(start_sidecar: SidecarFactory,
                                                          mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    async with sdk(sidecar.url) as (client, headers):
        answer = await client.chat.complete_async(
            model=LARGE, messages=user("hello"))
        embedded = await client.embeddings.create_async(model=LARGE, inputs=["a b"])
    assert answer.model == LARGE and embedded.model == LARGE
    assert [h[MODEL_HEADER] for h in headers.seen] == [LARGE, LARGE]
    assert len(await mock_upstream.requests()) == 2


async def test_other_model_calls_fall_back_too(start_sidecar: SidecarFactory,
                                               mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env({"codestral-latest": ["codestral-2405"],
                                                  "mistral-embed": ["mistral-embed-2312"]}))
    await mock_upstream.fault(action="respond", status=503, times=-1, model="codestral-latest")
    await mock_upstream.fault(action="respond", status=503, times=-1, model="mistral-embed")
    async with sdk(sidecar.url) as (client, headers):
        fim = await client.fim.complete_async(model="codestral-latest", prompt="def f(",
                                              suffix="")
        embedded = await client.embeddings.create_async(model="mistral-embed", inputs=["a"])
    assert (fim.model, embedded.model) == ("codestral-2405", "mistral-embed-2312")
    assert [h[MODEL_HEADER] for h in headers.seen] == ["codestral-2405", "mistral-embed-2312"]


async def test_without_a_table_the_plugin_does_nothing(start_sidecar: SidecarFactory,
                                                       mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env({}))
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    reply = await send(sidecar.url, chat(LARGE))
    assert (reply.status, reply.attempts) == (503, 2)
    assert MODEL_HEADER not in reply.headers


async def test_only_the_model_changes_in_what_upstream_receives(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(SIDECAR_RETRY_MAX_ATTEMPTS="1"))
    await mock_upstream.fault(action="respond", status=503, times=1, model=LARGE)
    reply = await send(sidecar.url, chat(LARGE, "two words", max_tokens=1, temperature=0.1))
    # The mock honours max_tokens: the fallback got the caller's other fields as they were.
    assert reply.body["choices"][0]["message"]["content"] == "Echo:"
    assert reply.body["choices"][0]["finish_reason"] == "length"
    assert reply.model == MEDIUM
    paths = [r["path"] for r in await mock_upstream.requests()]
    assert paths == [CHAT_PATH, CHAT_PATH]
