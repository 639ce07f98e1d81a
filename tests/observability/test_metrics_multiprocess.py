"""Several worker processes sharing PROMETHEUS_MULTIPROC_DIR: any worker's /metrics reports
the sum over all of them."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.conftest import MockUpstream, SidecarProcess, wait_for
from tests.observability.obs_support import MODEL, Metrics, scrape


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
    env = {"SIDECAR_PLUGINS": "metrics", "MISTRAL_BASE_URL": mock_upstream.url,
           "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    first, second = spawn_sidecar(**env), spawn_sidecar(**env)
    await _chat(first.url, 3)
    await _chat(second.url, 2)

    for worker in (first, second):
        # a worker records its own requests before answering a scrape; the other one's
        # reach the shared files with its next batch (SIDECAR_METRICS_FLUSH_SECONDS)
        async def all_five(url: str = worker.url) -> Metrics | None:
            m = await scrape(url)
            done = m.value("mistral_sidecar_requests_total", operation="chat.complete",
                           method="POST", status="200")
            return m if done == 5 else None

        m: Metrics = await wait_for(all_five)
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
    env = {"SIDECAR_PLUGINS": "metrics", "MISTRAL_BASE_URL": mock_upstream.url,
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
        # each worker writes its count to the shared files every second
        await wait_for(lambda: in_flight(1))
        await resp.read()
    await wait_for(lambda: in_flight(0))
