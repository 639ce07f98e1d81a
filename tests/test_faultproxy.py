"""The fault proxy, driven through the real toxiproxy-python client like any fault test would.

Timing assertions are lower bounds (a toxic must delay at least as long as configured); the few
upper bounds compare against delays many times larger than a loopback round trip.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
import requests
from toxiproxy import Proxy, Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from tests.support.faultproxy import FaultProxyServer
from tests.support.toxiproxy_fixture import (
    free_port,
    listen_address,
    toxiproxy_server,  # noqa: F401  (fixture, until the root conftest loads the plugin)
)

READ_TIMEOUT = 5.0


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP echo server that closes its side once the client has finished sending."""
    writers: set[asyncio.StreamWriter] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            writers.discard(writer)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in list(writers):
        writer.close()
    await server.wait_closed()


@pytest.fixture
def echo_proxy(toxiproxy_server: Toxiproxy, echo_port: int) -> Proxy:  # noqa: F811
    """A proxy named ``echo`` in front of the echo server, on a port chosen by the server."""
    return toxiproxy_server.create(
        upstream=f"127.0.0.1:{echo_port}", name="echo", listen="127.0.0.1:0"
    )


async def connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a client connection through ``proxy``."""
    host, port = listen_address(proxy)
    return await asyncio.open_connection(host, port)


async def round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes = b"ping"
) -> tuple[bytes, float]:
    """Send ``payload`` and read its echo; return it with the elapsed seconds."""
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    echoed = await asyncio.wait_for(reader.readexactly(len(payload)), READ_TIMEOUT)
    return echoed, time.monotonic() - started


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the proxy sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), READ_TIMEOUT)


async def test_bytes_pass_through_a_proxy_on_a_chosen_port(
    toxiproxy_server: Toxiproxy,  # noqa: F811
    echo_proxy: Proxy,
) -> None:
    host, port = listen_address(echo_proxy)
    assert port != 0
    reader, writer = await connect(echo_proxy)
    echoed, _ = await round_trip(reader, writer, b"hello through the proxy")
    assert echoed == b"hello through the proxy"
    listed = toxiproxy_server.proxies()
    assert list(listed) == ["echo"]
    assert listed["echo"].enabled is True
    assert listed["echo"].listen == f"{host}:{port}"
    writer.close()


async def test_api_errors_raise_the_client_exceptions(
    toxiproxy_server: Toxiproxy,  # noqa: F811
    echo_proxy: Proxy,
) -> None:
    with pytest.raises(ProxyExists):
        APIConsumer.post(
            "/proxies",
            json={"name": "echo", "listen": "127.0.0.1:0", "upstream": echo_proxy.upstream},
        )
    with pytest.raises(NotFound):
        APIConsumer.get("/proxies/missing")
    assert toxiproxy_server.get_proxy("missing") is None
    with pytest.raises(InvalidToxic):
        echo_proxy.add_toxic(type="no_such_toxic")
    with pytest.raises(InvalidToxic):
        echo_proxy.add_toxic(type="latency", stream="sideways")
    echo_proxy.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(ProxyExists):
        echo_proxy.add_toxic(type="latency", attributes={"latency": 2})
    with pytest.raises(NotFound):
        echo_proxy.destroy_toxic("missing")


async def test_toxics_are_listed_with_defaults_and_can_be_updated(echo_proxy: Proxy) -> None:
    echo_proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 50})
    toxic = echo_proxy.get_toxic("latency_upstream")
    assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "upstream", 1.0)
    assert toxic.attributes == {"latency": 50, "jitter": 0}
    url = f"/proxies/{echo_proxy.name}/toxics/latency_upstream"
    APIConsumer.post(url, json={"attributes": {"jitter": 10}, "toxicity": 0.5})
    updated = APIConsumer.get(url).json()
    assert updated["attributes"] == {"latency": 50, "jitter": 10}
    assert updated["toxicity"] == 0.5


async def test_latency_applies_to_a_live_connection(echo_proxy: Proxy) -> None:
    reader, writer = await connect(echo_proxy)
    await round_trip(reader, writer)
    echo_proxy.add_toxic(type="latency", attributes={"latency": 300})
    echoed, elapsed = await round_trip(reader, writer)
    assert echoed == b"ping"
    assert elapsed >= 0.29
    writer.close()


async def test_toxicity_zero_leaves_connections_alone(echo_proxy: Proxy) -> None:
    echo_proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 3000})
    reader, writer = await connect(echo_proxy)
    _, elapsed = await round_trip(reader, writer)
    assert elapsed < 2.0
    writer.close()


async def test_destroying_a_toxic_restores_a_live_connection(echo_proxy: Proxy) -> None:
    echo_proxy.add_toxic(type="latency", name="slow", attributes={"latency": 3000})
    reader, writer = await connect(echo_proxy)
    assert list(echo_proxy.toxics()) == ["slow"]
    assert echo_proxy.destroy_toxic("slow") is True
    assert echo_proxy.toxics() == {}
    _, elapsed = await round_trip(reader, writer)
    assert elapsed < 2.0
    writer.close()


async def test_bandwidth_slows_a_large_transfer(echo_proxy: Proxy) -> None:
    payload = bytes(range(256)) * 800  # 204,800 bytes
    echo_proxy.add_toxic(type="bandwidth", attributes={"rate": 400})  # KB/s, so >= 0.5 s
    reader, writer = await connect(echo_proxy)
    started = time.monotonic()

    async def send() -> None:
        writer.write(payload)
        await writer.drain()

    _, echoed = await asyncio.gather(send(), reader.readexactly(len(payload)))
    assert echoed == payload
    assert time.monotonic() - started >= 0.45
    writer.close()


async def test_timeout_zero_holds_data_until_removed(echo_proxy: Proxy) -> None:
    reader, writer = await connect(echo_proxy)
    echo_proxy.add_toxic(type="timeout", name="hold", attributes={"timeout": 0})
    writer.write(b"lost")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(10), 0.5)
    assert not reader.at_eof()
    echo_proxy.destroy_toxic("hold")
    echoed, _ = await round_trip(reader, writer, b"back")
    assert echoed == b"back"
    writer.close()


async def test_timeout_closes_the_connection_after_the_delay(echo_proxy: Proxy) -> None:
    echo_proxy.add_toxic(type="timeout", attributes={"timeout": 300})
    started = time.monotonic()
    reader, writer = await connect(echo_proxy)
    writer.write(b"never answered")
    assert await read_to_eof(reader) == b""
    assert time.monotonic() - started >= 0.25
    writer.close()


async def test_reset_peer_resets_the_client(echo_proxy: Proxy) -> None:
    echo_proxy.add_toxic(type="reset_peer", attributes={"timeout": 100})
    reader, writer = await connect(echo_proxy)
    writer.write(b"ping")
    with pytest.raises(ConnectionResetError):
        await read_to_eof(reader)
    writer.close()


async def test_limit_data_cuts_the_stream_after_n_bytes(echo_proxy: Proxy) -> None:
    echo_proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    reader, writer = await connect(echo_proxy)
    writer.write(b"0123456789abcdefghij")
    assert await read_to_eof(reader) == b"0123456789"
    writer.close()


async def test_slicer_delivers_every_byte_in_delayed_slices(echo_proxy: Proxy) -> None:
    payload = bytes(range(256)) * 40  # 10,240 bytes -> about ten 1 KB slices
    echo_proxy.add_toxic(
        type="slicer", attributes={"average_size": 1000, "size_variation": 200, "delay": 30_000}
    )
    reader, writer = await connect(echo_proxy)
    echoed, elapsed = await round_trip(reader, writer, payload)
    assert echoed == payload
    assert elapsed >= 0.2  # at least 8 slices, each followed by 30 ms
    writer.close()


async def test_slow_close_delays_the_close(echo_proxy: Proxy) -> None:
    echo_proxy.add_toxic(type="slow_close", attributes={"delay": 300})
    reader, writer = await connect(echo_proxy)
    await round_trip(reader, writer)
    started = time.monotonic()
    writer.write_eof()  # the echo server closes in turn; the proxy holds that close back
    assert await read_to_eof(reader) == b""
    assert time.monotonic() - started >= 0.25
    writer.close()


async def test_down_refuses_and_drops_connections_then_restores(echo_proxy: Proxy) -> None:
    host, port = listen_address(echo_proxy)
    reader, writer = await connect(echo_proxy)
    await round_trip(reader, writer)
    with echo_proxy.down():
        with pytest.raises(ConnectionRefusedError):
            await connect(echo_proxy)
        try:
            assert await read_to_eof(reader) == b""
        except ConnectionResetError:
            pass  # dropped either way
    writer.close()
    assert listen_address(echo_proxy) == (host, port)
    reader, writer = await connect(echo_proxy)
    echoed, _ = await round_trip(reader, writer, b"back up")
    assert echoed == b"back up"
    writer.close()


async def test_reset_and_destroy_all(
    toxiproxy_server: Toxiproxy,  # noqa: F811
    echo_proxy: Proxy,
    echo_port: int,
) -> None:
    other = toxiproxy_server.create(upstream=f"127.0.0.1:{echo_port}", name="other")
    echo_proxy.add_toxic(type="latency", attributes={"latency": 3000})
    other.disable()
    assert toxiproxy_server.reset() is True
    proxies = toxiproxy_server.proxies()
    assert all(p.enabled for p in proxies.values())
    assert echo_proxy.toxics() == {}
    reader, writer = await connect(other)
    echoed, _ = await round_trip(reader, writer)
    assert echoed == b"ping"
    writer.close()

    toxiproxy_server.destroy_all()
    assert toxiproxy_server.proxies() == {}
    with pytest.raises(ConnectionRefusedError):
        await connect(echo_proxy)


def test_server_runs_standalone_and_stop_closes_everything() -> None:
    upstream_port = free_port()
    with FaultProxyServer() as server:
        version = requests.get(f"{server.url}/version", timeout=5).json()
        assert "version" in version
        created = requests.post(
            f"{server.url}/proxies",
            json={"name": "p", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream_port}"},
            timeout=5,
        )
        assert created.status_code == 201
        proxy_port = int(created.json()["listen"].rsplit(":", 1)[1])
        # Nothing listens upstream: the proxy accepts, then closes the client.
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as client:
            assert client.recv(10) == b""
    for port in (server.port, proxy_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
