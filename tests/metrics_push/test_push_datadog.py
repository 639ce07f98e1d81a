"""SDK traffic through a sidecar process reaches Datadog as the key series: over the HTTP API
with DATADOG_API_KEY (a fake intake here), or over DogStatsD to a local Agent (a UDP socket);
and a Datadog that does not answer costs the requests nothing."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy import __version__
from tests.conftest import MockUpstream, SidecarProcess, wait_for
from tests.metrics_push.push_support import (
    CALLER_KEY,
    DATADOG_KEY,
    EMBED_MODEL,
    MODEL,
    PRICES_ENV,
    DatadogIntake,
    DogStatsdReceiver,
    sdk_traffic,
    tag_dict,
)

CHAIN = "prices,metrics_push"


@pytest.fixture
async def intake(aiohttp_server: Callable[..., Awaitable[TestServer]]
                 ) -> tuple[DatadogIntake, str]:
    """A fake Datadog intake on a loopback port, and its base URL."""
    receiver = DatadogIntake()
    server = await aiohttp_server(receiver.app())
    return receiver, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def agent() -> AsyncIterator[tuple[DogStatsdReceiver, int]]:
    """A UDP socket where the Datadog Agent's DogStatsD would listen, and its port."""
    transport, receiver = await asyncio.get_running_loop().create_datagram_endpoint(
        DogStatsdReceiver, local_addr=("127.0.0.1", 0))
    yield receiver, transport.get_extra_info("sockname")[1]
    transport.close()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A URL whose server accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    listener.close()


async def test_sdk_traffic_reaches_the_datadog_api_as_the_key_series(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream,
        intake: tuple[DatadogIntake, str]) -> None:
    receiver, url = intake
    sidecar = await asyncio.to_thread(
        spawn_sidecar, SIDECAR_PLUGINS_CHAIN=CHAIN, MISTRAL_BASE_URL=mock_upstream.url,
        DATADOG_API_KEY=DATADOG_KEY, SIDECAR_DATADOG_API_URL=url, ENVIRONMENT="staging",
        SIDECAR_METRICS_PUSH_FLUSH_SECONDS="0.2", SIDECAR_PRICES_OVERRIDES=PRICES_ENV)
    traffic = await sdk_traffic(sidecar.url, mock_upstream)

    # Batched: a few posts for a dozen requests, each request counted once (series and
    # distributions are posted one after the other).
    made = sum(traffic.requests.values())
    await wait_for(lambda: receiver.total("mistral.api.requests") == made
                   and len(receiver.distribution("mistral.api.latency")) == made, timeout=10)
    for operation, count in traffic.requests.items():
        assert receiver.total("mistral.api.requests", operation=operation) == count, operation
        latencies = receiver.distribution("mistral.api.latency", operation=operation)
        assert len(latencies) == count and all(0 < s < 10 for s in latencies), operation

    # The failed chat: counted as an error, with its status class and code.
    assert receiver.total("mistral.api.errors") == traffic.errors == 1
    assert receiver.total("mistral.api.errors", operation="chat.complete",
                          status_class="4xx", error_code="upstream_400", model=MODEL) == 1
    assert receiver.total("mistral.api.requests", operation="chat.complete",
                          status_class="2xx") == 3

    # Tokens and cost by model equal what the SDK was told.
    for model in (MODEL, EMBED_MODEL):
        assert receiver.total("mistral.tokens.prompt", model=model) == \
            traffic.prompt_tokens[model]
        assert receiver.total("mistral.tokens.completion", model=model) == \
            traffic.completion_tokens[model]
        assert receiver.total("mistral.tokens.total", model=model) == \
            traffic.total_tokens[model]
        assert receiver.total("mistral.cost", model=model, currency="USD") == \
            pytest.approx(traffic.cost(model))

    # The guide's mistral.conversation, tagged by agent, and the entries its runs produced.
    gauges = {tag_dict(entry["tags"])["operation"]: entry["points"][-1][1]
              for entry in receiver.series() if entry["metric"] == "mistral.conversation"
              and tag_dict(entry["tags"])["agent_id"] == traffic.agent_id}
    assert gauges == {**traffic.run_outputs,
                      "conversations.history": traffic.history_entries}
    assert receiver.total("mistral.conversation.entries", agent_id=traffic.agent_id) == \
        sum(traffic.run_outputs.values())

    # Datadog's types and unified service tags; the API key in its header and nowhere else.
    for entry in receiver.series():
        tags = tag_dict(entry["tags"])
        assert tags["env"] == "staging" and tags["service"] == "mistral-sidecar"
        assert tags["version"] == __version__ and entry["host"]
        expected = "gauge" if entry["metric"] == "mistral.conversation" else "count"
        assert entry["type"] == expected, entry
        if expected == "count":
            assert entry["interval"] >= 1
    for _path, headers, payload in receiver.posts:
        assert headers["DD-API-KEY"] == DATADOG_KEY
        assert headers["Content-Encoding"] == "deflate"
        assert "DD-APPLICATION-KEY" not in headers
        assert DATADOG_KEY not in str(payload) and CALLER_KEY not in str(payload)


async def test_one_batch_per_interval_and_the_last_one_at_shutdown(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream,
        intake: tuple[DatadogIntake, str]) -> None:
    receiver, url = intake
    sidecar = await asyncio.to_thread(
        spawn_sidecar, SIDECAR_PLUGINS_CHAIN=CHAIN, MISTRAL_BASE_URL=mock_upstream.url,
        DATADOG_API_KEY=DATADOG_KEY, SIDECAR_DATADOG_API_URL=url,
        SIDECAR_METRICS_PUSH_FLUSH_SECONDS="3600")
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.post(sidecar.url + "/v1/chat/completions", json={
                    "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}) as resp:
                assert resp.status == 200
    await asyncio.sleep(0.3)
    assert receiver.posts == []  # nothing is sent per request

    sidecar.signal(signal.SIGTERM)
    assert await asyncio.to_thread(sidecar.proc.wait, 20) == 0
    assert [path for path, _headers, _payload in receiver.posts] == [
        "/api/v1/series", "/api/v1/distribution_points"]
    assert receiver.total("mistral.api.requests", operation="chat.complete") == 5
    assert len(receiver.distribution("mistral.api.latency", operation="chat.complete")) == 5


async def test_dogstatsd_to_a_local_agent(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream,
        agent: tuple[DogStatsdReceiver, int]) -> None:
    receiver, port = agent
    sidecar = await asyncio.to_thread(
        spawn_sidecar, SIDECAR_PLUGINS_CHAIN=CHAIN, MISTRAL_BASE_URL=mock_upstream.url,
        SIDECAR_DATADOG_STATSD_HOST="127.0.0.1", SIDECAR_DATADOG_STATSD_PORT=str(port),
        ENVIRONMENT="staging", SIDECAR_METRICS_PUSH_FLUSH_SECONDS="0.2",
        SIDECAR_PRICES_OVERRIDES=PRICES_ENV)
    traffic = await sdk_traffic(sidecar.url, mock_upstream)

    made = sum(traffic.requests.values())
    await wait_for(lambda: receiver.total("mistral.api.requests", "c") == made
                   and len(receiver.values("mistral.api.latency", "d")) == made, timeout=10)
    for operation, count in traffic.requests.items():
        assert receiver.total("mistral.api.requests", "c", operation=operation) == count
        assert len(receiver.values("mistral.api.latency", "d", operation=operation)) == count
    assert receiver.total("mistral.api.errors", "c", status_class="4xx") == 1
    for model in (MODEL, EMBED_MODEL):
        assert receiver.total("mistral.tokens.prompt", "c", model=model) == \
            traffic.prompt_tokens[model]
        assert receiver.total("mistral.tokens.completion", "c", model=model) == \
            traffic.completion_tokens[model]
        assert receiver.total("mistral.cost", "c", model=model) == \
            pytest.approx(traffic.cost(model))
    assert receiver.values("mistral.conversation", "g", agent_id=traffic.agent_id,
                           operation="conversations.history") == [traffic.history_entries]
    for _name, _value, _kind, tags in receiver.metrics():
        assert tags["env"] == "staging" and tags["service"] == "mistral-sidecar"
        assert tags["version"] == __version__


async def test_a_datadog_that_never_answers_costs_requests_nothing(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream,
        blackhole: str) -> None:
    sidecar = await asyncio.to_thread(
        spawn_sidecar, SIDECAR_PLUGINS_CHAIN="prices,logs,metrics,metrics_push",
        MISTRAL_BASE_URL=mock_upstream.url, DATADOG_API_KEY=DATADOG_KEY,
        SIDECAR_DATADOG_API_URL=blackhole, SIDECAR_DATADOG_TIMEOUT_SECONDS="0.5",
        SIDECAR_METRICS_PUSH_FLUSH_SECONDS="0.1")
    durations = []
    async with aiohttp.ClientSession() as http:
        for _ in range(30):
            began = time.monotonic()
            async with http.post(sidecar.url + "/v1/chat/completions", json={
                    "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}) as resp:
                assert resp.status == 200
                await resp.read()
            durations.append(time.monotonic() - began)
            await asyncio.sleep(0.03)
        # Every send hangs for its whole timeout (0.5 s) five times a second: requests that
        # waited for any would show it.
        durations.sort()
        assert durations[-3] < 0.25, f"requests took {durations} while Datadog hung"

        # Each lost batch is logged once and counted.
        async def failures() -> float:
            async with http.get(sidecar.url + "/metrics") as resp:
                text = await resp.text()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith('mistral_sidecar_metrics_push_failures_total'
                                          '{sink="datadog"}'))

        await wait_for(lambda: failures(), timeout=10)
    assert "metrics_push.send_failed" in sidecar.output()
    assert DATADOG_KEY not in sidecar.output()

    # Shutdown waits for the last batch no longer than the timeout allows.
    began = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    assert await asyncio.to_thread(sidecar.proc.wait, 20) == 0
    assert time.monotonic() - began < 10
