"""Unit tests of the core's pure parts: SSE parsing and reassembly, settings resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.errors import SidecarError, UpstreamError
from proxy.settings import ConfigError, Setting, core_settings, resolve
from proxy.sse import (
    ChatStreamAssembler,
    ConversationStreamAssembler,
    SSEEvent,
    SSEParser,
    assembler_for,
)


def _frames(*datas: object, event: str | None = None) -> bytes:
    out = b""
    for data in datas:
        if event:
            out += f"event: {event}\n".encode()
        text = data if isinstance(data, str) else json.dumps(data)
        out += f"data: {text}\n\n".encode()
    return out


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 10_000])
def test_parser_handles_any_chunking_and_line_endings(chunk_size: int) -> None:
    stream = (b"event: a\r\ndata: 1\r\n\r\n: comment\n\ndata: x\ndata: y\n\n"
              b"id: 9\ndata:no-space\r\rdata: [DONE]\n\n")
    parser = SSEParser()
    events: list[SSEEvent] = []
    for i in range(0, len(stream), chunk_size):
        events.extend(parser.feed(stream[i:i + chunk_size]))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("a", "1", None), (None, "x\ny", None), (None, "no-space", "9"), (None, "[DONE]", None),
    ]


def test_chat_stream_reassembles_content_tool_calls_and_usage() -> None:
    asm = ChatStreamAssembler()
    chunks = [
        {"id": "c1", "model": "m", "created": 1,
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "t1", "index": 0, "function": {"name": "get", "arguments": "{\"a\":"}}]}}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "t1", "index": 0, "function": {"arguments": "1}"}}]},
            "finish_reason": "tool_calls"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]
    parser = SSEParser()
    for event in parser.feed(_frames(*chunks, "[DONE]")):
        asm.add(event)
    result = asm.result()
    message = result["choices"][0]["message"]
    assert message["content"] == "Hello"
    assert message["tool_calls"][0]["function"] == {"name": "get", "arguments": "{\"a\":1}"}
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert result["usage"]["total_tokens"] == 5 and asm.done
    assert result["id"] == "c1" and result["model"] == "m"


def test_conversation_stream_reassembles_entries() -> None:
    frames = (
        _frames({"type": "conversation.response.started", "conversation_id": "conv_1",
                 "created_at": "t0"}, event="conversation.response.started")
        + _frames({"type": "function.call.delta", "id": "fc1", "name": "lookup",
                   "tool_call_id": "call_1", "arguments": "{\"q\":", "created_at": "t1"},
                  {"type": "function.call.delta", "id": "fc1", "arguments": "\"x\"}",
                   "created_at": "t1"}, event="function.call.delta")
        + _frames({"type": "message.output.delta", "id": "msg1", "role": "assistant",
                   "content": "Hi ", "model": "m", "created_at": "t2"},
                  {"type": "message.output.delta", "id": "msg1", "content": "there",
                   "created_at": "t2"}, event="message.output.delta")
        + _frames({"type": "conversation.response.done", "created_at": "t3",
                   "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}},
                  event="conversation.response.done")
    )
    events = SSEParser().feed(frames)
    asm = assembler_for(events[0])
    assert isinstance(asm, ConversationStreamAssembler)
    for event in events:
        asm.add(event)
    result = asm.result()
    assert result["conversation_id"] == "conv_1"
    call, message = result["outputs"]
    assert call["type"] == "function.call" and call["arguments"] == "{\"q\":\"x\"}"
    assert call["tool_call_id"] == "call_1" and call["name"] == "lookup"
    assert message["type"] == "message.output" and message["content"] == "Hi there"
    assert message["completed_at"] == "t3" and result["usage"]["total_tokens"] == 6


def test_settings_precedence_env_over_yaml_over_default(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  port: 9000\nupstream:\n  base_url: http://yaml:1\n")
    settings = resolve(core_settings(), environ={"SIDECAR_SERVER_PORT": "9100"}, config_file=config)
    assert settings["server.port"] == 9100
    assert settings["upstream.base_url"] == "http://yaml:1"
    assert settings["upstream.connect_timeout_seconds"] == 5.0


def test_settings_report_every_problem_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(core_settings(), environ={"SIDECAR_SERVER_PORT": "70000",
                                          "SIDECAR_UPSTREAM_CONNECT_TIMEOUT_SECONDS": "soon"})
    problems = caught.value.problems
    assert len(problems) == 2
    assert any("SIDECAR_SERVER_PORT" in p and "65535" in p for p in problems)
    assert any("SIDECAR_UPSTREAM_CONNECT_TIMEOUT_SECONDS" in p and "number" in p for p in problems)


def test_secret_settings_are_redacted_and_lists_split() -> None:
    settings = resolve(core_settings(), environ={"MISTRAL_API_KEY": "k1, k2"})
    assert settings["upstream.api_key"] == ["k1", "k2"]
    assert settings.redacted()["upstream.api_key"] == "<set>"
    assert "k1" not in json.dumps(settings.redacted())


def test_data_settings_take_json_from_env() -> None:
    declared = [Setting("x.table", "data", {}, "a table", env="X_TABLE")]
    assert resolve(declared, environ={"X_TABLE": '{"a": 1}'})["x.table"] == {"a": 1}
    with pytest.raises(ConfigError):
        resolve(declared, environ={"X_TABLE": "{broken"})


def test_errors_render_in_mistral_shape() -> None:
    error = SidecarError(429, "slow down", headers={"Retry-After": "3"})
    response = error.to_response()
    assert response.status == 429 and response.headers["Retry-After"] == "3"
    assert json.loads(response.body) == {  # type: ignore[arg-type]
        "object": "error", "message": "slow down", "type": "rate_limit_error",
        "code": "rate_limited"}
    assert UpstreamError("connect", "x").status == 502
    assert not UpstreamError("connect", "x").reached_upstream
    assert UpstreamError("timeout", "x").status == 504
