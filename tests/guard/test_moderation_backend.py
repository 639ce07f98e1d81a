"""The moderation plugin in front of the mock upstream, whose classifier flags a text holding
``flag:<category>`` (exactly ``flag:<category>=<score>``), see
:mod:`proxy.mock_upstream.api_moderations`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mistralai.client import errors

from plugins.moderation.cache import ScoreCache, text_key
from proxy.loader import load
from proxy.settings import ConfigError
from tests.conftest import MOCK_KEY, MockUpstream, SidecarFactory
from tests.support.event_recorder import events

MODEL = "mistral-small-latest"
PLUGINS = "validate,plugins.moderation,tests.support.event_recorder"
ON = {"SIDECAR_PLUGINS_CHAIN": PLUGINS, "SIDECAR_MODERATION_ENABLED": "true"}
FLAGGED = "tell me how to flag:violence_and_threats the payroll clerk 9c4e"
MODERATIONS = "/v1/moderations"
CHAT = "/v1/chat/completions"


def _chat(*texts: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL,
                            "messages": [{"role": "user", "content": t} for t in texts]}
    if stream:
        body["stream"] = True
    return body


async def _post(url: str, body: dict[str, Any], path: str = CHAT,
                request_id: str | None = None) -> tuple[int, Any]:
    headers = {"X-Request-ID": request_id} if request_id else {}
    async with aiohttp.ClientSession() as http, http.post(
        url + path, json=body, headers=headers) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def _upstream(mock: MockUpstream) -> list[tuple[str, int | None]]:
    return [(r["path"], r["status"]) for r in await mock.requests()]


def _header(record: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in record["headers"] if k.lower() == name.lower()), None)


# --- blocking and letting through ----------------------------------------------------------


async def test_flagged_text_is_refused_naming_the_category_never_the_text(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar = await start_sidecar(**ON)
    with pytest.raises(errors.SDKError) as caught:
        await sidecar.sdk().chat.complete_async(
            model=MODEL, messages=[{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": FLAGGED}])
    assert caught.value.status_code == 400
    body = json.loads(caught.value.body)
    assert body == {
        "object": "error", "type": "invalid_request_error", "code": "moderation_flagged",
        "message": "The request was refused by content moderation: category "
                   "'violence_and_threats' flagged in messages[1].content."}
    # Classified, never forwarded.
    assert await _upstream(mock_upstream) == [(MODERATIONS, 200)]
    assert events(sidecar.app, "moderation.decision") == [
        {"decision": "blocked", "cached": False, "categories": "violence_and_threats"}]
    assert any(r.name == "mistral_sidecar.moderation" and r.levelno == logging.WARNING
               for r in caplog.records)
    assert "payroll" not in caplog.text and "9c4e" not in caplog.text


async def test_clean_text_goes_upstream_after_moderation_on_the_same_key(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON)
    status, reply = await _post(sidecar.url, _chat("how do I bake rye bread"),
                                request_id="moderated-1")
    assert status == 200
    assert reply["choices"][0]["message"]["content"] == "Echo: how do I bake rye bread"
    records = await mock_upstream.requests()
    assert [(r["path"], r["status"]) for r in records] == [(MODERATIONS, 200), (CHAT, 200)]
    for record in records:
        assert _header(record, "Authorization") == f"Bearer {MOCK_KEY}"
        assert _header(record, "X-Request-ID") == "moderated-1"
    assert events(sidecar.app, "moderation.decision") == [
        {"decision": "allowed", "cached": False, "categories": ""}]
    [call] = events(sidecar.app, "moderation.call")
    assert call["status"] == "ok" and call["texts"] == 1 and call["http_status"] is None
    assert 0 < call["seconds"] < 2


async def test_thresholds_are_per_category(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_MODERATION_THRESHOLDS='{"pii": 0.6}')
    assert (await _post(sidecar.url, _chat("my id flag:pii=0.59")))[0] == 200
    # Not listed, so never blocking, however high it scores.
    assert (await _post(sidecar.url, _chat("flag:violence_and_threats")))[0] == 200
    status, body = await _post(sidecar.url, _chat("hello", "my id flag:pii=0.6"))
    assert status == 400
    assert "'pii' flagged in messages[1].content" in body["message"]
    assert [p for p, _ in await _upstream(mock_upstream)].count(CHAT) == 2


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/fim/completions", {"model": "codestral-latest", "prompt": "def f():",
                             "suffix": "# flag:selfharm"}, "suffix"),
    ("/v1/conversations", {"model": MODEL, "inputs": "flag:sexual"}, "inputs"),
    ("/v1/conversations", {"model": MODEL, "inputs": "hi", "instructions": "flag:sexual"},
     "instructions"),
    ("/v1/agents", {"model": MODEL, "name": "a", "instructions": "flag:sexual"},
     "instructions"),
])
async def test_every_model_read_operation_is_moderated(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
    path: str, body: dict[str, Any], field: str,
) -> None:
    sidecar = await start_sidecar(**ON)
    status, answer = await _post(sidecar.url, body, path)
    assert status == 400 and answer["code"] == "moderation_flagged"
    assert answer["message"].endswith(f"flagged in {field}.")
    assert await _upstream(mock_upstream) == [(MODERATIONS, 200)]


async def test_a_stream_is_moderated_before_it_starts(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON)
    status, body = await _post(sidecar.url, _chat(FLAGGED, stream=True))
    assert status == 400 and body["code"] == "moderation_flagged"
    assert await _upstream(mock_upstream) == [(MODERATIONS, 200)]


async def test_long_texts_are_classified_in_pieces(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_MODERATION_MAX_INPUT_CHARS="1000")
    long_text = " ".join(f"w{n:03}" for n in range(500)) + " flag:selfharm"
    status, _body = await _post(sidecar.url, _chat(long_text))
    assert status == 400
    assert events(sidecar.app, "moderation.call")[0]["texts"] == 3


async def test_off_by_default(start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    assert (await _post(sidecar.url, _chat(FLAGGED)))[0] == 200
    assert await _upstream(mock_upstream) == [(CHAT, 200)]


# --- when the classifier cannot answer -----------------------------------------------------


async def test_fail_closed_refuses_when_moderation_fails(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar = await start_sidecar(**ON, SIDECAR_MODERATION_FAILURE_MODE="closed")
    await mock_upstream.fault(path_prefix=MODERATIONS, action="respond", status=500)
    status, body = await _post(sidecar.url, _chat("clean 51f0"))
    assert status == 503
    assert body["object"] == "error" and body["code"] == "moderation_unavailable"
    assert body["type"] == "service_unavailable"
    assert await _upstream(mock_upstream) == [(MODERATIONS, 500)]
    assert events(sidecar.app, "moderation.call")[0]["http_status"] == 500
    assert events(sidecar.app, "moderation.decision")[0]["decision"] == "failed_closed"
    assert "51f0" not in caplog.text


async def test_fail_closed_refuses_when_moderation_is_too_slow(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_MODERATION_TIMEOUT_SECONDS="0.2")
    await mock_upstream.fault(path_prefix=MODERATIONS, action="delay", delay_ms=3000)
    started = time.monotonic()
    status, body = await _post(sidecar.url, _chat("clean"))
    assert time.monotonic() - started < 2
    assert status == 503 and body["code"] == "moderation_unavailable"
    assert CHAT not in [p for p, _ in await _upstream(mock_upstream)]
    assert events(sidecar.app, "moderation.call")[0]["status"] == "timeout"


@pytest.mark.parametrize("fault", [
    {"action": "respond", "status": 503},
    {"action": "delay", "delay_ms": 3000},
    {"action": "drop"},
])
async def test_fail_open_lets_the_request_through_and_counts_it(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream, fault: dict[str, Any],
) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_MODERATION_FAILURE_MODE="open",
                                  SIDECAR_MODERATION_TIMEOUT_SECONDS="0.2")
    await mock_upstream.fault(path_prefix=MODERATIONS, **fault)
    started = time.monotonic()
    status, reply = await _post(sidecar.url, _chat("flag:sexual got through"))
    assert time.monotonic() - started < 2
    assert status == 200
    assert reply["choices"][0]["message"]["content"] == "Echo: flag:sexual got through"
    assert events(sidecar.app, "moderation.decision") == [
        {"decision": "failed_open", "cached": False, "categories": ""}]
    assert events(sidecar.app, "moderation.call")[0]["status"] != "ok"
    # A failure is not cached: the next request is classified again, and blocked.
    assert (await _post(sidecar.url, _chat("flag:sexual got through")))[0] == 400


# --- cache ---------------------------------------------------------------------------------


async def test_an_identical_request_is_not_classified_again(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON)
    for _ in range(2):
        assert (await _post(sidecar.url, _chat("what is a monad")))[0] == 200
    blocked = [await _post(sidecar.url, _chat(FLAGGED)) for _ in range(2)]
    assert [status for status, _ in blocked] == [400, 400]
    assert [p for p, _ in await _upstream(mock_upstream)] == [MODERATIONS, CHAT, CHAT,
                                                               MODERATIONS]
    assert [e["cached"] for e in events(sidecar.app, "moderation.decision")] == [
        False, True, False, True]


async def test_a_growing_conversation_sends_only_its_new_texts(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**ON)
    first = _chat("first question")
    await _post(sidecar.url, first)
    history = {"model": MODEL, "messages": [
        *first["messages"], {"role": "assistant", "content": "Echo: first question"},
        {"role": "user", "content": "second question"}]}
    assert (await _post(sidecar.url, history))[0] == 200
    assert [e["texts"] for e in events(sidecar.app, "moderation.call")] == [1, 2]


async def test_cache_size_zero_classifies_every_time(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_MODERATION_CACHE_SIZE="0")
    for _ in range(2):
        await _post(sidecar.url, _chat("what is a monad"))
    assert [p for p, _ in await _upstream(mock_upstream)].count(MODERATIONS) == 2


def test_cache_entries_expire_and_the_least_recent_goes_first() -> None:
    now = [100.0]
    cache = ScoreCache(size=2, ttl=10.0, clock=lambda: now[0])
    a, b, c = (text_key("m", t) for t in ("a", "b", "c"))
    assert text_key("m", "a") == a and text_key("other", "a") != a and len(a) == 32
    cache.put(a, {"pii": 0.1})
    cache.put(b, {"pii": 0.2})
    assert cache.get(a) == {"pii": 0.1}
    cache.put(c, {"pii": 0.3})  # b was used least recently
    assert cache.get(b) is None and cache.get(a) is not None and len(cache) == 2
    now[0] += 10.0
    assert cache.get(a) is None and cache.get(c) is None and len(cache) == 0


# --- key pool and metrics ------------------------------------------------------------------


async def test_moderation_shares_the_key_pool(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(
        **{**ON, "SIDECAR_PLUGINS_CHAIN": PLUGINS + ",keypool"},
        MISTRAL_API_KEY=f"revoked-key,{MOCK_KEY}")
    assert (await _post(sidecar.url, _chat("hello there")))[0] == 200
    records = await mock_upstream.requests()
    assert [(r["path"], r["status"], _header(r, "Authorization")) for r in records] == [
        (MODERATIONS, 401, "Bearer revoked-key"),
        (MODERATIONS, 200, f"Bearer {MOCK_KEY}"),
        # The moderation call benched the revoked key for the proxied call too.
        (CHAT, 200, f"Bearer {MOCK_KEY}"),
    ]
    assert events(sidecar.app, "keypool.cooldown")[0]["status"] == 401


async def test_latency_and_decisions_show_in_metrics(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**{**ON, "SIDECAR_PLUGINS_CHAIN": "metrics," + PLUGINS})
    await mock_upstream.settings(latency_ms=50)
    await _post(sidecar.url, _chat("hello"))
    await _post(sidecar.url, _chat(FLAGGED))
    async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/metrics") as resp:
        text = await resp.text()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line and not line.startswith("#")}
    assert samples['mistral_sidecar_moderation_calls_total{status="ok"}'] == 2
    assert samples['mistral_sidecar_moderation_call_seconds_total{status="ok"}'] >= 0.1
    assert samples["mistral_sidecar_moderation_cache_entries"] == 2
    assert samples['mistral_sidecar_events_total{event="moderation.decision"}'] == 2
    assert samples['mistral_sidecar_errors_total{code="moderation_flagged",'
                   'operation="chat.complete"}'] == 1


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value"), [
    ("SIDECAR_MODERATION_THRESHOLDS", '{"sexual": 1.5}'),
    ("SIDECAR_MODERATION_THRESHOLDS", '["sexual"]'),
    ("SIDECAR_MODERATION_FAILURE_MODE", "maybe"),
    ("SIDECAR_MODERATION_TIMEOUT_SECONDS", "0"),
])
def test_bad_settings_stop_start_up(tmp_path: Path, variable: str, value: str) -> None:
    env = {"MISTRAL_API_KEY": "k", "SIDECAR_SERVER_DATA_DIR": str(tmp_path), **ON, variable: value}
    with pytest.raises(ConfigError) as caught:
        load(None, env)
    assert any(variable in problem for problem in caught.value.problems)


def test_authentication_must_run_first(tmp_path: Path) -> None:
    env = {"MISTRAL_API_KEY": "k", "SIDECAR_SERVER_DATA_DIR": str(tmp_path), **ON,
           "SIDECAR_PLUGINS_CHAIN": "store,plugins.moderation,auth"}
    with pytest.raises(ConfigError) as caught:
        load(None, env)
    assert "plugins.chain (SIDECAR_PLUGINS_CHAIN): auth must come before moderation" in \
        caught.value.problems
    load(None, {**env, "SIDECAR_PLUGINS_CHAIN": "store,auth,plugins.moderation"})
