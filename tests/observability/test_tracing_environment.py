"""ENVIRONMENT labels the exported traces: the collector sees it as a resource attribute."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from plugins.tracing import TRACING
from tests.conftest import SidecarFactory
from tests.observability.obs_support import MODEL

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)


async def test_spans_carry_the_deployment_environment(
        start_sidecar: SidecarFactory,
        aiohttp_server: Callable[..., Awaitable[TestServer]]) -> None:
    resources: list[dict[str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        resources.extend({a.key: a.value.string_value for a in spans.resource.attributes}
                         for spans in export.resource_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    collector = await aiohttp_server(app)
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="tracing", ENVIRONMENT="staging",
        OTEL_EXPORTER_OTLP_ENDPOINT=str(collector.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}) as resp:
        assert resp.status == 200
    await sidecar.app[TRACING].flush()

    assert resources, "no spans exported"
    assert resources[0]["deployment.environment.name"] == "staging"
    assert resources[0]["deployment.environment"] == "staging"
    assert resources[0]["service.name"] == "mistral-sidecar"
