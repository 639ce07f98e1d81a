"""Requests that end unusually are counted once, in-flight returns to zero, the breaker's
life shows up, and labels stay bounded whatever upstream or plugins send."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import MockUpstream, SidecarFactory, wait_for
from tests.observability.obs_support import MODEL, Metrics, raw_post, scrape

CHAT = {"operation": "chat.complete", "method": "POST"}


def _body(stream: bool = False, model: str = MODEL) -> dict[str, object]:
    return {"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}


async def test_a_stream_being_relayed_is_in_flight_until_it_ends(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics")
    await mock_upstream.settings(token_interval_ms=100)
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions", json=_body(stream=True)) as resp:
        await resp.content.readany()
        assert (await scrape(sidecar.url)).value("mistral_sidecar_requests_in_flight") == 1
        await resp.read()
    assert (await scrape(sidecar.url)).value("mistral_sidecar_requests_in_flight") == 0


async def test_time_to_first_token_waits_for_the_first_word(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics")
    # The role-only frame comes at once, every later frame (the first word's too) 150 ms
    # after the one before.
    await mock_upstream.settings(token_interval_ms=150)
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions", json=_body(stream=True)) as resp:
        await resp.read()
    m = await scrape(sidecar.url)
    stream = {"operation": "chat.complete", "model": MODEL}
    assert m.value("mistral_sidecar_time_to_first_token_seconds_count", **stream) == 1
    ttft = m.value("mistral_sidecar_time_to_first_token_seconds_sum", **stream)
    duration = m.value("mistral_sidecar_request_duration_seconds_sum",
                       operation="chat.complete", stream="true")
    assert 0.15 <= ttft < duration - 0.15
    assert m.value("mistral_sidecar_stream_output_tokens_per_second_sum", **stream) > 0


async def test_broken_and_abandoned_streams_count_once(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="logs,metrics", SIDECAR_LOG_STDOUT="false")
    async with aiohttp.ClientSession() as http:
        # upstream cuts the stream after two frames
        await mock_upstream.fault(action="cut_stream", path_prefix="/v1/chat",
                                  after_frames=2, times=1)
        async with http.post(sidecar.url + "/v1/chat/completions",
                             json=_body(stream=True)) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        # the caller leaves after the first frame of a slow stream
        await mock_upstream.settings(token_interval_ms=200)
        async with http.post(sidecar.url + "/v1/chat/completions",
                             json=_body(stream=True)) as resp:
            await resp.content.readany()
        # the caller leaves before upstream even answered (the request ends when upstream
        # answers: the sidecar reads what a JSON call upstream bills reports)
        await mock_upstream.fault(action="delay", delay_ms=1000, path_prefix="/v1/chat",
                                  times=1)
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(sidecar.url + "/v1/chat/completions", json=_body(),
                                 timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
                await resp.read()

    async def all_three() -> Metrics | None:
        m = await scrape(sidecar.url)
        done = m.total("mistral_sidecar_requests_total")
        return m if done == 3 and m.value("mistral_sidecar_requests_in_flight") == 0 else None

    m: Metrics = await wait_for(all_three)
    assert m.value("mistral_sidecar_requests_total", **CHAT, status="200") == 2
    assert m.value("mistral_sidecar_requests_total", **CHAT, status="499") == 1
    assert m.value("mistral_sidecar_errors_total", operation="chat.complete",
                   code="upstream_reset") == 1
    assert m.value("mistral_sidecar_request_duration_seconds_count", operation="chat.complete",
                   stream="true") == 2


async def test_a_breaker_trip(start_sidecar: SidecarFactory,
                              mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="metrics,retry,breaker", SIDECAR_RETRY_MAX_ATTEMPTS="1",
        SIDECAR_BREAKER_WINDOW_SIZE="4", SIDECAR_BREAKER_MINIMUM_CALLS="2",
        SIDECAR_BREAKER_WAIT_SECONDS="60")
    await mock_upstream.fault(action="respond", status=502, path_prefix="/v1/chat", times=-1)
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            async with http.post(sidecar.url + "/v1/chat/completions", json=_body()) as resp:
                statuses.append(resp.status)
                codes = (await resp.json()).get("code")
    assert statuses == [502, 502, 503] and codes == "circuit_open"
    m = await scrape(sidecar.url)
    assert m.value("mistral_sidecar_breaker_transitions_total", from_state="closed",
                   to_state="open") == 1
    assert m.value("mistral_sidecar_breaker_rejections_total", state="open") == 1
    assert m.value("mistral_sidecar_breaker_state", state="open") == 1
    assert m.value("mistral_sidecar_errors_total", operation="chat.complete",
                   code="circuit_open") == 1
    assert m.value("mistral_sidecar_requests_total", **CHAT, status="503") == 1
    assert m.value("mistral_sidecar_upstream_attempts_total", operation="chat.complete") == 2
    assert m.value("mistral_sidecar_events_total", event="breaker.transition") == 1


async def test_model_labels_are_capped(start_sidecar: SidecarFactory,
                                       mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics")
    async with aiohttp.ClientSession() as http:
        for n in range(110):
            async with http.post(sidecar.url + "/v1/chat/completions",
                                 json=_body(model=f"model-{n}")) as resp:
                assert resp.status == 200
    m = await scrape(sidecar.url)
    models = {s.labels["model"] for s in m.find("mistral_sidecar_tokens_total")}
    assert len(models) == 101 and "other" in models
    assert m.total("mistral_sidecar_tokens_total", model="other", kind="prompt") > 0


async def test_event_fields_of_any_shape_are_counted_with_safe_labels(
        start_sidecar: SidecarFactory) -> None:
    from tests.observability.obs_fakes import PLUGIN

    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=f"metrics,{PLUGIN}")
    odd = [["retry.attempt", {"reason": ["a", "list"]}],
           ["retry.attempt", {"reason": {"a": 1}}],
           ["retry.attempt", {}],
           ["retry.attempt", {"reason": "x" * 500}],
           ["ratelimit.decision", {"limit": "requests", "allowed": [1], "scope": None}],
           ["persistence.spooled", {"records": "many"}]]
    status, _ = await raw_post(sidecar, "/v1/models", None, "odd-events", method="GET",
                               X_Test_Emit=json.dumps(odd))
    assert status == 200
    m = await scrape(sidecar.url)
    assert m.value("mistral_sidecar_events_total", event="retry.attempt") == 4
    assert m.total("mistral_sidecar_retries_total") == 4
    assert {s.labels["reason"] for s in m.find("mistral_sidecar_retries_total")} == {
        "__a____list__", "__a_:_1_", "none", "other"}
    assert m.total("mistral_sidecar_ratelimit_decisions_total") == 1
    # a count that is not a number counts the event itself
    assert m.value("mistral_sidecar_persistence_spooled_records_total") == 1


async def test_a_hung_dependency_does_not_hang_the_scrape(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="metrics,tests.observability.obs_slow_ready",
        SIDECAR_METRICS_READINESS_TIMEOUT_SECONDS="0.2")
    started = time.monotonic()
    m = await scrape(sidecar.url)
    assert time.monotonic() - started < 2
    assert m.value("mistral_sidecar_dependency_up",
                   dependency="tests.observability.obs_slow_ready") == 0
    assert m.value("mistral_sidecar_ready") == 0

    quiet = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics,tests.observability.obs_slow_ready",
                                SIDECAR_METRICS_READINESS="false")
    m = await scrape(quiet.url)
    assert not m.find("mistral_sidecar_dependency_up") and not m.find("mistral_sidecar_ready")
    assert m.value("mistral_sidecar_requests_in_flight") == 0


async def test_redis_down_shows_while_the_limiter_stays_ready(
        start_sidecar: SidecarFactory) -> None:
    from tests.conftest import free_port

    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics,ratelimit", REDIS_HOST="127.0.0.1",
                                  REDIS_PORT=str(free_port()))
    m = await scrape(sidecar.url)
    assert m.value("mistral_sidecar_dependency_up", dependency="ratelimit") == 1
    assert m.value("mistral_sidecar_dependency_up", dependency="redis") == 0
    assert m.value("mistral_sidecar_ratelimit_fallback_active") == 1
    assert m.value("mistral_sidecar_ready") == 1
