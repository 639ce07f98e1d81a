"""W3C trace context: what reaches upstream, what the logs say, and the header rules."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from plugins.tracing import TracingState, parse_traceparent
from tests.conftest import MockUpstream, Sidecar, SidecarFactory
from tests.observability.obs_support import MODEL, access_lines, sidecar_log

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")
CALLER_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CALLER_STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


async def _sidecar(start_sidecar: SidecarFactory, tmp_path: Path) -> Sidecar:
    return await start_sidecar(SIDECAR_PLUGINS_CHAIN="logs,tracing", SIDECAR_LOG_STDOUT="false",
                               SIDECAR_LOG_FILE=str(tmp_path / "sidecar.log"))


async def _chat(sidecar: Sidecar, request_id: str, **headers: str) -> None:
    sent = {"X-Request-ID": request_id, **headers}
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers=sent) as resp:
        assert resp.status == 200


async def _upstream_headers(mock: MockUpstream, name: str) -> list[list[str]]:
    """Values of header ``name`` in each request upstream received, oldest first."""
    return [[value for key, value in request["headers"] if key.lower() == name]
            for request in await mock.requests()]


def _trace_ids(sidecar: Sidecar, tmp_path: Path) -> dict[str, str]:
    return {line["request_id"]: line["trace_id"]
            for line in access_lines(sidecar_log(sidecar, tmp_path / "sidecar.log"))}


async def test_a_trace_is_started_when_the_caller_has_none(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path) -> None:
    sidecar = await _sidecar(start_sidecar, tmp_path)
    await _chat(sidecar, "first")
    await _chat(sidecar, "second")
    sent = await _upstream_headers(mock_upstream, "traceparent")
    assert [len(values) for values in sent] == [1, 1]
    matches = [TRACEPARENT.match(values[0]) for values in sent]
    assert all(matches)
    logged = _trace_ids(sidecar, tmp_path)
    assert [m.group(1) for m in matches if m] == [logged["first"], logged["second"]]
    assert logged["first"] != logged["second"]


async def test_the_callers_trace_context_passes_through_unchanged(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path) -> None:
    sidecar = await _sidecar(start_sidecar, tmp_path)
    await _chat(sidecar, "joined", traceparent=CALLER_PARENT, tracestate=CALLER_STATE)
    assert await _upstream_headers(mock_upstream, "traceparent") == [[CALLER_PARENT]]
    assert await _upstream_headers(mock_upstream, "tracestate") == [[CALLER_STATE]]
    assert _trace_ids(sidecar, tmp_path)["joined"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_malformed_traceparent_is_not_joined_nor_duplicated(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path) -> None:
    sidecar = await _sidecar(start_sidecar, tmp_path)
    bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"  # upper case
    await _chat(sidecar, "malformed", traceparent=bad)
    assert await _upstream_headers(mock_upstream, "traceparent") == [[bad]]
    trace_id = _trace_ids(sidecar, tmp_path)["malformed"]
    assert re.match(r"^[0-9a-f]{32}$", trace_id) and trace_id != bad[3:35].lower()


async def test_every_log_line_of_a_request_has_its_trace_id(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path) -> None:
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="logs,tracing,tests.observability.obs_fakes",
        SIDECAR_LOG_STDOUT="false", SIDECAR_LOG_FILE=str(tmp_path / "sidecar.log"))
    await _chat(sidecar, "traced", traceparent=CALLER_PARENT)
    lines = [line for line in sidecar_log(sidecar, tmp_path / "sidecar.log")
             if line.get("request_id") == "traced"]
    assert {line["logger"] for line in lines} == {"tests.obs_fakes", "mistral_sidecar.access"}
    assert {line["trace_id"] for line in lines} == {"4bf92f3577b34da6a3ce929d0e0e4736"}


@pytest.mark.parametrize(("header", "valid"), [
    (CALLER_PARENT, True),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
    # a future version may append fields after a dash
    ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future", True),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", False),
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", False),
    ("", False),
])
def test_traceparent_rules(header: str, valid: bool) -> None:
    parsed = parse_traceparent(header)
    assert (parsed is not None) == valid
    if parsed is not None:
        assert parsed.trace_id == header[3:35] and parsed.parent_id == header[36:52]
        assert parsed.sampled == header.startswith("01", 53)


def test_generated_ids_are_never_zero() -> None:
    state = TracingState(random_bits=lambda bits: 0)
    assert state.new_trace_id() == "0" * 31 + "1"
    assert state.new_span_id() == "0" * 15 + "1"
    state = TracingState(random_bits=lambda bits: (1 << bits) - 1)
    assert state.new_trace_id() == "f" * 32 and state.new_span_id() == "f" * 16
