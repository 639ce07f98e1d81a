"""OpenTelemetry spans exported over OTLP/HTTP to a collector (a small receiver here), and
no OpenTelemetry at all when no collector is configured."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

# The OpenTelemetry SDK and exporter are test dependencies: without them this fails, not skips.
import opentelemetry.exporter.otlp.proto.http.trace_exporter
import opentelemetry.sdk.trace  # noqa: F401
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from plugins.tracing import TRACING
from tests.conftest import REPO, MockUpstream, Sidecar, SidecarFactory
from tests.observability.obs_support import MODEL, access_lines, sidecar_log

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


class Collector:
    """Receives OTLP/HTTP protobuf exports and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        """POST /v1/traces."""
        assert request.headers["Content-Type"] == "application/x-protobuf"
        assert request.headers.get("X-Collector-Token") == "t0ken"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            self.resources.append({a.key: a.value.string_value
                                   for a in resource_spans.resource.attributes})
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes: dict[str, Any] = {}
                    for a in span.attributes:
                        value = a.value
                        attributes[a.key] = (value.int_value if value.HasField("int_value")
                                             else value.string_value)
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                        "kind": span.kind, "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano, "attributes": attributes,
                        "error": span.status.code == 2})
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def collector(aiohttp_server: Callable[..., Awaitable[TestServer]]
                    ) -> tuple[Collector, str]:
    """A collector on a loopback port; yields it and its base URL."""
    receiver = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    server = await aiohttp_server(app)
    return receiver, str(server.make_url("")).rstrip("/")


async def _traced_sidecar(start_sidecar: SidecarFactory, url: str, tmp_path: Path) -> Sidecar:
    return await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="logs,tracing,retry", OTEL_EXPORTER_OTLP_ENDPOINT=url,
        OTEL_EXPORTER_OTLP_HEADERS="X-Collector-Token=t0ken", OTEL_SERVICE_NAME="obs-test",
        SIDECAR_RETRY_BASE_INTERVAL_SECONDS="0.001", SIDECAR_LOG_STDOUT="false",
        SIDECAR_LOG_FILE=str(tmp_path / "sidecar.log"))


async def _chat(sidecar: Sidecar, request_id: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Request-ID": request_id, **headers}) as resp:
        await resp.read()
        return resp.status


async def test_one_span_per_request_and_per_attempt(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        collector: tuple[Collector, str], tmp_path: Path) -> None:
    receiver, url = collector
    sidecar = await _traced_sidecar(start_sidecar, url, tmp_path)
    await mock_upstream.fault(action="respond", status=503, path_prefix="/v1/chat", times=1)
    assert await _chat(sidecar, "retried") == 200
    await sidecar.app[TRACING].flush()

    assert receiver.resources[0]["service.name"] == "obs-test"
    servers = [s for s in receiver.spans if s["name"] == "chat.complete"]
    attempts = sorted((s for s in receiver.spans if s["name"] == "upstream chat.complete"),
                      key=lambda s: s["start"])
    assert len(servers) == 1 and len(attempts) == 2
    server = servers[0]
    assert server["kind"] == 2 and server["parent"] == ""  # SERVER, root
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["attributes"]["mistral_sidecar.attempts"] == 2
    assert server["attributes"]["mistral_sidecar.request_id"] == "retried"
    assert server["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert [a["attributes"]["http.response.status_code"] for a in attempts] == [503, 200]
    assert [a["error"] for a in attempts] == [True, False]
    assert attempts[1]["attributes"]["http.request.resend_count"] == 1
    for attempt in attempts:
        assert attempt["kind"] == 3  # CLIENT
        assert attempt["trace_id"] == server["trace_id"]
        assert attempt["parent"] == server["span_id"]
        assert server["start"] <= attempt["start"] <= attempt["end"] <= server["end"]
    assert attempts[0]["end"] <= attempts[1]["start"]

    # upstream saw the request span as parent; the logs name the same trace and span
    sent = [[v for k, v in r["headers"] if k.lower() == "traceparent"]
            for r in await mock_upstream.requests()]
    expected = f"00-{server['trace_id']}-{server['span_id']}-01"
    assert sent == [[expected], [expected]]
    line = access_lines(sidecar_log(sidecar, tmp_path / "sidecar.log"))[0]
    assert (line["trace_id"], line["span_id"]) == (server["trace_id"], server["span_id"])


async def test_spans_join_the_callers_trace(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
        collector: tuple[Collector, str], tmp_path: Path) -> None:
    receiver, url = collector
    sidecar = await _traced_sidecar(start_sidecar, url, tmp_path)
    assert await _chat(sidecar, "joined", traceparent=CALLER_PARENT) == 200
    await sidecar.app[TRACING].flush()
    server = next(s for s in receiver.spans if s["name"] == "chat.complete")
    assert server["trace_id"] == CALLER_TRACE and server["parent"] == "00f067aa0ba902b7"
    sent = [[v for k, v in r["headers"] if k.lower() == "traceparent"]
            for r in await mock_upstream.requests()]
    assert sent == [[CALLER_PARENT]]


async def test_errors_mark_the_span(start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
                                    collector: tuple[Collector, str], tmp_path: Path) -> None:
    receiver, url = collector
    sidecar = await _traced_sidecar(start_sidecar, url, tmp_path)
    await mock_upstream.fault(action="drop", path_prefix="/v1/chat", times=3)
    assert await _chat(sidecar, "dropped") == 502
    await sidecar.app[TRACING].flush()
    server = next(s for s in receiver.spans if s["name"] == "chat.complete")
    assert server["error"] and server["attributes"]["error.type"] == "upstream_reset"
    attempts = [s for s in receiver.spans if s["name"] == "upstream chat.complete"]
    # chat completions are retried after resets: three attempts, three failed spans
    assert [a["attributes"]["error.type"] for a in attempts] == ["reset"] * 3
    assert all(a["error"] and "http.response.status_code" not in a["attributes"]
               for a in attempts)


async def test_without_the_sdk_the_sidecar_still_propagates(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    sidecar = await _traced_sidecar(start_sidecar, "http://127.0.0.1:9", tmp_path)
    assert sidecar.app[TRACING].tracer is None
    assert any("mistral-sidecar[otel]" in r.getMessage() for r in caplog.records)
    assert await _chat(sidecar, "plain") == 200
    sent = [[v for k, v in r["headers"] if k.lower() == "traceparent"]
            for r in await mock_upstream.requests()]
    assert len(sent) == 1 and len(sent[0]) == 1


def test_no_opentelemetry_import_without_a_collector(tmp_path: Path) -> None:
    script = """
import asyncio, json, sys
from aiohttp import web
from proxy.loader import load
settings, chain = load(None, {"SIDECAR_PLUGINS_CHAIN": "logs,metrics,tracing",
                              "SIDECAR_LOG_STDOUT": "false"})
app = web.Application()
from proxy.app import SETTINGS, PLUGINS
app[SETTINGS] = settings
app[PLUGINS] = chain
asyncio.run(chain.await_all("startup", app=app))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []
