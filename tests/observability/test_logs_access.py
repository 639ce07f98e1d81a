"""JSON logs after real traffic: every line parses, one access line per request with the
fields operators need, request ids on every line of a request, no secret, no message text."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import MOCK_KEY, MockUpstream, Sidecar, SidecarFactory, wait_for
from tests.observability.obs_support import (
    MODEL,
    SECRET_MARKER,
    Traffic,
    access_lines,
    flush_logs,
    raw_post,
    read_lines,
    run_traffic,
    sidecar_log,
)
from tests.observability.test_metrics_traffic import obs_env

CALLER_KEY = "caller-secret-key-123"
DB_PASSWORD = "db-secret-pw-99"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def _broken_stream(sidecar: Sidecar, mock: MockUpstream, request_id: str) -> None:
    """A stream that upstream cuts after two frames: the caller sees a truncated body."""
    await mock.fault(action="cut_stream", path_prefix="/v1/chat", after_frames=2, times=1)
    payload = {"model": MODEL, "stream": True,
               "messages": [{"role": "user", "content": SECRET_MARKER}]}
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions", json=payload,
            headers={"X-Request-ID": request_id}) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def _abandoned_stream(sidecar: Sidecar, mock: MockUpstream, request_id: str) -> None:
    """A caller that reads the first frame of a slow stream and goes away."""
    await mock.settings(token_interval_ms=200)
    payload = {"model": MODEL, "stream": True,
               "messages": [{"role": "user", "content": SECRET_MARKER}]}
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions", json=payload,
            headers={"X-Request-ID": request_id}) as resp:
        assert resp.status == 200
        await resp.content.readany()
    await mock.settings(token_interval_ms=0)


@pytest.fixture
async def logged_run(start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
                     tmp_path: Path) -> tuple[Traffic, list[dict[str, Any]], str]:
    """Traffic of every kind; then the log file's lines, parsed, and its raw text."""
    log_file = tmp_path / "logs" / "sidecar.log"
    sidecar = await start_sidecar(**obs_env(tmp_path, DB_PASSWORD=DB_PASSWORD,
                                            SIDECAR_LIMITS_MAX_JSON_BODY_BYTES="4096"))
    traffic = await run_traffic(sidecar, mock_upstream)
    too_large = traffic.next_id("too-large")
    status, error = await raw_post(sidecar, "/v1/chat/completions",
                                   {"model": MODEL, "messages": [{"role": "user",
                                                                  "content": "x" * 5000}]},
                                   too_large)
    assert status == 413 and error is not None
    traffic.error_bytes[too_large] = len(json.dumps(error).encode())
    await _broken_stream(sidecar, mock_upstream, traffic.next_id("broken"))
    abandoned = traffic.next_id("abandoned")
    await _abandoned_stream(sidecar, mock_upstream, abandoned)

    def abandoned_logged() -> bool:
        return abandoned in log_file.read_text()

    await wait_for(abandoned_logged)
    flush_logs(sidecar)
    text = log_file.read_text(encoding="utf-8")
    return traffic, read_lines(log_file), text


def _by_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["request_id"]: line for line in access_lines(lines)}


async def test_one_access_line_per_request(
        logged_run: tuple[Traffic, list[dict[str, Any]], str]) -> None:
    traffic, lines, _ = logged_run
    assert lines, "nothing was logged"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["environment"] == "development", line
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["time"])
    counts = Counter(line.get("request_id") for line in access_lines(lines))
    assert counts == Counter(traffic.request_ids), counts


async def test_access_line_fields(logged_run: tuple[Traffic, list[dict[str, Any]], str]
                                  ) -> None:
    traffic, lines, _ = logged_run
    by_id = _by_id(lines)
    chat = by_id["obs-chat-0"]
    assert chat["logger"] == "mistral_sidecar.access" and chat["level"] == "INFO"
    assert chat["message"] == "POST /v1/chat/completions 200"
    expected = {"method": "POST", "path": "/v1/chat/completions", "operation": "chat.complete",
                "owner": "team-a", "role": "user", "key_id": "key_test_1", "model": MODEL,
                "status": 200, "upstream_status": 200, "attempts": 1, "outcome": "ok"}
    assert {k: chat.get(k) for k in expected} == expected
    assert chat["total_tokens"] == chat["prompt_tokens"] + chat["completion_tokens"] > 0
    assert chat["duration_ms"] >= chat["upstream_ms"] > 0
    assert chat["bytes"] > 0 and chat["request_bytes"] > 0
    assert HEX32.match(chat["trace_id"])

    stream = by_id["obs-chat-stream-2"]
    assert stream["stream"] is True and stream["completion_tokens"] > 0
    assert 0 < stream["ttft_ms"] <= stream["duration_ms"]

    start, append = by_id["obs-conv-start-3"], by_id["obs-conv-append-4"]
    assert start["operation"] == "conversations.start" and start["model"] == MODEL
    assert start["conversation_id"] == append["conversation_id"]
    assert append["conversation_id"] in traffic.resource_ids
    agent_line = by_id["obs-agent-create-5"]
    with_agent = by_id["obs-conv-agent-6"]
    assert agent_line["agent_id"] == with_agent["agent_id"]
    assert {with_agent["agent_id"], with_agent["conversation_id"]} <= traffic.resource_ids

    limited = by_id["obs-upstream-429-8"]
    assert (limited["status"], limited["upstream_status"], limited["attempts"]) == (429, 429, 3)
    assert limited["retry_stopped"] == "max_attempts"
    retried = by_id["obs-retried-9"]
    assert (retried["status"], retried["attempts"]) == (200, 2)

    rejected = by_id["obs-rejected-10"]
    assert (rejected["status"], rejected["outcome"], rejected["error_code"]) == \
        (429, "error", "rate_limited")
    assert rejected["attempts"] == 0 and "upstream_status" not in rejected
    answered = by_id["obs-answered-11"]
    assert (answered["status"], answered["outcome"]) == (200, "answered_by_plugin")

    too_large = by_id["obs-too-large-13"]
    assert (too_large["status"], too_large["error_code"]) == (413, "request_too_large")
    assert too_large["bytes"] == traffic.error_bytes["obs-too-large-13"]
    broken = by_id["obs-broken-14"]
    assert (broken["status"], broken["outcome"], broken["error_code"]) == \
        (200, "upstream_broken", "upstream_reset")
    abandoned = by_id["obs-abandoned-15"]
    assert abandoned["outcome"] == "client_disconnected"


async def test_events_and_other_modules_carry_the_request_id(
        logged_run: tuple[Traffic, list[dict[str, Any]], str]) -> None:
    traffic, lines, _ = logged_run
    retries = [line for line in lines if line.get("event") == "retry.attempt"]
    assert [line["request_id"] for line in retries] == \
        ["obs-upstream-429-8", "obs-upstream-429-8", "obs-retried-9"]
    assert all(line["logger"] == "mistral_sidecar.event" for line in retries)
    assert set(retries[0]) == {"time", "level", "logger", "message", "environment", "event",
                               "request_id", "operation", "trace_id", "attempt", "reason",
                               "delay_s"}
    failed = [line for line in lines if line.get("event") == "persistence.write_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "WARNING"
    assert failed[0]["error"] == "OperationalError" and "operation" not in failed[0]
    # emitted without a request, but from the task of one: that request's id is kept
    assert failed[0]["request_id"] == "obs-events-12"
    # a rate-limit pass is DEBUG, a rejection is logged
    decisions = [line for line in lines if line.get("event") == "ratelimit.decision"]
    assert [d["allowed"] for d in decisions] == [False]
    # lines another module logged while handling a request carry that request's id
    seen = [line for line in lines if line["logger"] == "tests.obs_fakes"]
    assert {line["request_id"] for line in seen} >= set(traffic.request_ids) - {
        "obs-too-large-13"}
    access = _by_id(lines)
    for line in seen:
        assert line["trace_id"] == access[line["request_id"]]["trace_id"]


async def test_no_secret_and_no_message_content(
        logged_run: tuple[Traffic, list[dict[str, Any]], str]) -> None:
    traffic, _, text = logged_run
    for secret in (MOCK_KEY, CALLER_KEY, DB_PASSWORD, SECRET_MARKER):
        assert secret not in text
    for reply in traffic.replies:
        assert reply and reply not in text


async def test_secrets_logged_by_mistake_are_redacted(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "sidecar.log"
    sidecar = await start_sidecar(**obs_env(tmp_path, DB_PASSWORD=DB_PASSWORD))
    status, _ = await raw_post(sidecar, "/v1/models", None, "leaky", method="GET",
                               X_Test_Leak="1")
    assert status == 200
    flush_logs(sidecar)
    text = log_file.read_text()
    for secret in (MOCK_KEY, DB_PASSWORD, "abcdefghijklmnop", "s3cret-url-pw"):
        assert secret not in text
    leaks = [line for line in read_lines(log_file)
             if line["logger"] == "tests.obs_fakes" and line["level"] != "INFO"]
    assert len(leaks) == 3
    assert leaks[0]["message"] == "upstream key [REDACTED], db password [REDACTED]"
    assert leaks[1]["message"].endswith("Authorization: Bearer [REDACTED]")
    assert leaks[1]["url"] == "postgresql://sidecar:[REDACTED]@db:5432/x"
    assert leaks[1]["nested"] == {"key": "[REDACTED]"}
    assert "RuntimeError: failed with key [REDACTED]" in leaks[2]["exc_info"]
    assert all(line["request_id"] == "leaky" for line in leaks)


async def test_content_is_logged_only_when_enabled(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "sidecar.log"
    sidecar = await start_sidecar(**obs_env(tmp_path, SIDECAR_LOG_CONTENT="true"))
    client = sidecar.sdk(CALLER_KEY)
    reply = await asyncio.to_thread(
        client.chat.complete, model=MODEL,
        messages=[{"role": "user", "content": f"hello {SECRET_MARKER}"}],
        http_headers={"X-Request-ID": "with-content"})
    line = _by_id(sidecar_log(sidecar, log_file))["with-content"]
    assert line["request_body"]["messages"][0]["content"] == f"hello {SECRET_MARKER}"
    assert line["response_body"]["choices"][0]["message"]["content"] == \
        reply.choices[0].message.content
    assert MOCK_KEY not in log_file.read_text()


async def test_levels_and_switches(start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "sidecar.log"
    sidecar = await start_sidecar(**obs_env(tmp_path, LOG_LEVEL="WARNING"))
    await raw_post(sidecar, "/v1/models", None, "quiet", method="GET")
    lines = sidecar_log(sidecar, log_file)
    # access lines do not depend on LOG_LEVEL; other INFO lines do
    assert [line["request_id"] for line in access_lines(lines)] == ["quiet"]
    assert not [line for line in lines if line["logger"] == "tests.obs_fakes"]

    other = tmp_path / "other"
    other.mkdir()
    sidecar = await start_sidecar(**obs_env(other, SIDECAR_LOG_ACCESS="false"))
    await raw_post(sidecar, "/v1/models", None, "no-access", method="GET")
    lines = sidecar_log(sidecar, other / "logs" / "sidecar.log")
    assert not [line for line in access_lines(lines) if line["request_id"] == "no-access"]
    assert [line for line in lines if line.get("request_id") == "no-access"]


async def test_file_rotates_by_size(start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    sidecar = await start_sidecar(**obs_env(tmp_path, SIDECAR_LOG_FILE_MAX_BYTES="2048",
                                            SIDECAR_LOG_FILE_BACKUP_COUNT="2"))
    for n in range(20):
        await raw_post(sidecar, "/v1/models", None, f"rotate-{n}", method="GET")
    flush_logs(sidecar)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["sidecar.log", "sidecar.log.1", "sidecar.log.2"]
    for name in files:
        path = tmp_path / "logs" / name
        assert 0 < path.stat().st_size <= 2048
        read_lines(path)
    newest = access_lines(read_lines(tmp_path / "logs" / "sidecar.log"))
    assert newest[-1]["request_id"] == "rotate-19"


async def test_console_handlers_replaced_then_restored(
        start_sidecar: SidecarFactory, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import logging
    import sys

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    root.addHandler(console)
    level = root.level
    try:
        sidecar = await start_sidecar(**obs_env(tmp_path, SIDECAR_LOG_STDOUT="true",
                                                LOG_LEVEL="DEBUG"))
        assert console not in root.handlers
        assert root.level == logging.DEBUG
        await raw_post(sidecar, "/v1/models", None, "to-stdout", method="GET")
        flush_logs(sidecar)
        out = capsys.readouterr().out
        assert any(json.loads(line).get("request_id") == "to-stdout"
                   for line in out.splitlines())
        await sidecar.server.close()
        assert console in root.handlers
        assert root.level == level
        assert not [h for h in root.handlers if type(h).__name__ == "LogQueue"]
    finally:
        root.removeHandler(console)
