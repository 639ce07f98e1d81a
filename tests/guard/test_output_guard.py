"""The output guard in front of the mock upstream, which answers ``"Echo: <last user
message>"``: what the caller sends comes back as the model's answer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from plugins.output_guard import luhn_valid
from proxy.loader import load
from proxy.settings import ConfigError
from tests.conftest import MockUpstream, SidecarFactory
from tests.support.event_recorder import events

MODEL = "mistral-small-latest"
PLUGINS = "validate,plugins.output_guard,tests.support.event_recorder"
ON = {"SIDECAR_PLUGINS_CHAIN": PLUGINS, "SIDECAR_OUTPUT_GUARD_ENABLED": "true"}
CARD = "4111 1111 1111 1111"
KEY = "sk-proj-Qw3rTy8uIoPaSdFgHjKl"
MISTRAL_KEY = "aB3dEfGhIjKlMnOpQrStUvWxYz012345"
EMAIL = "jane.doe@example.org"
SECRETS = f"card {CARD} key {KEY} and {MISTRAL_KEY} mail {EMAIL} thanks"
#: Looks like the above at a glance, and is none of it.
ORDINARY = ("card 4111 1111 1111 1112 on 2024-01-15 md5 d41d8cd98f00b204e9800998ecf8427e "
            "ask-me-anything at example.org for <b>HTML</b>")


def _chat(text: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return body


async def _post(url: str, body: dict[str, Any], path: str = "/v1/chat/completions"
                ) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url + path, json=body) as resp:
        raw = await resp.read()
        assert resp.content_length in (None, len(raw))
        if resp.content_type == "application/json":
            return resp.status, json.loads(raw)
        return resp.status, raw.decode()


def _content(reply: dict[str, Any]) -> str:
    content: str = reply["choices"][0]["message"]["content"]
    return content


async def test_secrets_in_an_answer_are_redacted(
    start_sidecar: SidecarFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar = await start_sidecar(**ON)
    reply = await sidecar.sdk().chat.complete_async(
        model=MODEL, messages=[{"role": "user", "content": SECRETS}])
    assert reply.choices[0].message.content == (
        "Echo: card [REDACTED] key [REDACTED] and [REDACTED] mail [REDACTED] thanks")
    assert reply.usage.completion_tokens == len(f"Echo: {SECRETS}".split())
    field = "choices[0].message.content"
    assert events(sidecar.app, "output_guard.detection") == [
        {"pattern": name, "field": field, "count": 1, "action": "redacted"}
        for name in ("api_key", "mistral_api_key", "card_number", "email")]
    assert any(r.name == "mistral_sidecar.output_guard" for r in caplog.records)
    for secret in (CARD, KEY, MISTRAL_KEY, EMAIL):
        assert secret not in caplog.text


async def test_the_replacement_can_name_the_pattern(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_OUTPUT_GUARD_REPLACEMENT="<{name} removed>")
    status, reply = await _post(sidecar.url, _chat(f"pay with {CARD.replace(' ', '-')} now"))
    assert status == 200
    assert _content(reply) == "Echo: pay with <card_number removed> now"


async def test_ordinary_text_is_left_alone(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**ON)
    status, reply = await _post(sidecar.url, _chat(ORDINARY))
    assert status == 200
    assert _content(reply) == f"Echo: {ORDINARY}"
    assert events(sidecar.app, "output_guard.detection") == []


async def test_conversation_outputs_are_redacted(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**ON)
    status, reply = await _post(sidecar.url, {"model": MODEL, "inputs": f"write to {EMAIL}"},
                                "/v1/conversations")
    assert status == 200
    assert reply["outputs"][0]["content"] == "Echo: write to [REDACTED]"
    assert events(sidecar.app, "output_guard.detection")[0]["field"] == "outputs[0].content"


async def test_log_mode_reports_without_changing_the_answer(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_OUTPUT_GUARD_MODE="log")
    status, reply = await _post(sidecar.url, _chat(f"mail {EMAIL}"))
    assert status == 200 and _content(reply) == f"Echo: mail {EMAIL}"
    assert events(sidecar.app, "output_guard.detection") == [
        {"pattern": "email", "field": "choices[0].message.content", "count": 1,
         "action": "logged"}]


async def test_streams_are_only_logged(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**ON)
    status, text = await _post(sidecar.url, _chat(f"card {CARD} mail {EMAIL}", stream=True))
    assert status == 200
    pieces = [json.loads(line[6:])["choices"][0]["delta"].get("content", "")
              for line in text.splitlines()
              if line.startswith("data: {")]
    assert "".join(pieces) == f"Echo: card {CARD} mail {EMAIL}"
    detections = events(sidecar.app, "output_guard.detection")
    assert {(d["pattern"], d["action"]) for d in detections} == {
        ("card_number", "logged"), ("email", "logged")}


async def test_upstream_errors_pass_unchanged(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON)
    error = {"object": "error", "message": f"contact {EMAIL}", "type": "invalid_request_error",
             "param": None, "code": "400"}
    await mock_upstream.fault(path_prefix="/v1/chat", action="respond", status=400, body=error)
    assert await _post(sidecar.url, _chat("hi")) == (400, error)


async def test_a_compressed_answer_is_refused_in_redact_mode(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON)
    await mock_upstream.fault(path_prefix="/v1/chat", action="respond", status=200,
                              body={"choices": []}, headers={"Content-Encoding": "gzip"})
    status, body = await _post(sidecar.url, _chat("hi"))
    assert status == 502
    assert body["object"] == "error" and body["code"] == "output_guard_uninspectable"


async def test_upstream_is_asked_for_a_readable_answer(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
) -> None:
    sidecar = await start_sidecar(**ON, SIDECAR_OUTPUT_GUARD_MODE="log")
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=_chat("hi"),
        headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.status == 200
    [record] = await mock_upstream.requests()
    assert ["Accept-Encoding", "identity"] in record["headers"]


async def test_configured_patterns_replace_the_defaults(start_sidecar: SidecarFactory) -> None:
    patterns = [{"name": "ticket", "pattern": r"\bTCK-\d{4,}\b"}]
    sidecar = await start_sidecar(**ON, SIDECAR_OUTPUT_GUARD_PATTERNS=json.dumps(patterns))
    status, reply = await _post(sidecar.url, _chat(f"see TCK-20931 and {EMAIL}"))
    assert status == 200 and _content(reply) == f"Echo: see [REDACTED] and {EMAIL}"


async def test_off_by_default(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGINS)
    status, reply = await _post(sidecar.url, _chat(SECRETS))
    assert status == 200 and _content(reply) == f"Echo: {SECRETS}"


def test_luhn() -> None:
    assert luhn_valid("4111 1111 1111 1111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111 1111 1111 1112") and not luhn_valid("1")


@pytest.mark.parametrize("patterns", [
    '[{"name": "x", "pattern": "("}]',
    '[{"name": "x", "pattern": "a"}, {"name": "x", "pattern": "b"}]',
    '[{"name": "x", "pattern": "a", "luhn": "yes"}]',
    '{"x": "a"}',
])
def test_bad_patterns_stop_start_up(tmp_path: Path, patterns: str) -> None:
    env = {"MISTRAL_API_KEY": "k", "SIDECAR_SERVER_DATA_DIR": str(tmp_path), **ON,
           "SIDECAR_OUTPUT_GUARD_PATTERNS": patterns}
    with pytest.raises(ConfigError) as caught:
        load(None, env)
    assert any("SIDECAR_OUTPUT_GUARD_PATTERNS" in p for p in caught.value.problems)
