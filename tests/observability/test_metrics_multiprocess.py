"""Several worker processes sharing PROMETHEUS_MULTIPROC_DIR: any worker's /metrics reports
the sum over all of them."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.conftest import MockUpstream, SidecarProcess, wait_for
from tests.observability.obs_fakes import PLUGIN as FAKES
from tests.observability.obs_support import MODEL, scrape


async def _chat(url: str, n: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.post(url + "/v1/chat/completions", json={
                    "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}) as resp:
                assert resp.status == 200


async def test_workers_are_summed(spawn_sidecar: Callable[..., SidecarProcess],
                                  mock_upstream: MockUpstream, tmp_path: Path) -> None:
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    # The old batching interval is still accepted, and ignored.
    env = {"SIDECAR_PLUGINS_CHAIN": "metrics", "MISTRAL_BASE_URL": mock_upstream.url,
           "PROMETHEUS_MULTIPROC_DIR": str(shared), "SIDECAR_METRICS_FLUSH_SECONDS": "30"}
    first, second = spawn_sidecar(**env), spawn_sidecar(**env)
    await _chat(first.url, 3)
    await _chat(second.url, 2)

    for worker in (first, second):
        # each request is in the shared files by the time its answer arrives
        m = await scrape(worker.url)
        assert m.value("mistral_sidecar_requests_total", operation="chat.complete",
                       method="POST", status="200") == 5
        assert m.value("mistral_sidecar_request_duration_seconds_count",
                       operation="chat.complete", stream="false") == 5
        assert m.total("mistral_sidecar_tokens_total", kind="completion") > 0
        assert m.value("mistral_sidecar_requests_in_flight") == 0
        assert m.value("mistral_sidecar_ready") == 1

    # a worker that stops keeps its counts but leaves the live gauges
    second.signal(signal.SIGTERM)
    assert second.proc.wait(timeout=20) == 0
    m = await scrape(first.url)
    assert m.value("mistral_sidecar_requests_total", operation="chat.complete",
                   method="POST", status="200") == 5
    assert len(m.find("mistral_sidecar_requests_in_flight")) == 1


async def test_a_workers_stream_in_flight_shows_in_the_others_scrape(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream,
        tmp_path: Path) -> None:
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    env = {"SIDECAR_PLUGINS_CHAIN": "metrics", "MISTRAL_BASE_URL": mock_upstream.url,
           "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    first, second = spawn_sidecar(**env), spawn_sidecar(**env)
    await mock_upstream.settings(token_interval_ms=500)

    async def in_flight(count: int) -> bool:
        return (await scrape(first.url)).value("mistral_sidecar_requests_in_flight") == count

    async with aiohttp.ClientSession() as http, http.post(
            second.url + "/v1/chat/completions", json={
                "model": MODEL, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}) as resp:
        await resp.content.readany()
        # counted in when it arrived, in the shared files at once
        assert await in_flight(1)
        await resp.read()
    await wait_for(lambda: in_flight(0))


async def test_requests_refused_before_the_metrics_plugin_leave_in_flight_at_zero(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream,
        tmp_path: Path) -> None:
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    # The stand-in plugin rejects before the metrics plugin sees the request start.
    env = {"SIDECAR_PLUGINS_CHAIN": f"{FAKES},metrics", "MISTRAL_BASE_URL": mock_upstream.url,
           "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    first, second = spawn_sidecar(**env), spawn_sidecar(**env)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(second.url + "/v1/chat/completions", json={
                    "model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                    headers={"X-Test-Reject": "1"}) as resp:
                assert resp.status == 429
    m = await scrape(first.url)
    assert m.value("mistral_sidecar_requests_total", operation="chat.complete",
                   method="POST", status="429") == 3
    assert m.value("mistral_sidecar_requests_in_flight") == 0
