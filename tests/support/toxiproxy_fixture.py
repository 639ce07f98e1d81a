"""Pytest fixture giving tests a ``toxiproxy.Toxiproxy`` client bound to a fresh fault server.

With ``TOXIPROXY_URL`` set (e.g. ``http://127.0.0.1:8474``) the client talks to that real
Toxiproxy, which is wiped (all proxies destroyed) before and after each test; otherwise each
test gets its own in-process :class:`~tests.support.faultproxy.FaultProxyServer`.

Enable it for a test tree with ``pytest_plugins = ["tests.support.toxiproxy_fixture"]`` in the
root conftest, or import ``toxiproxy_server`` into a single test module.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from toxiproxy import Proxy, Toxiproxy
from toxiproxy.api import APIConsumer

from tests.support.faultproxy import FaultProxyServer, split_host_port

__all__ = ["free_port", "listen_address", "toxiproxy_server"]

TOXIPROXY_URL_ENV = "TOXIPROXY_URL"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (another process may still grab it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listen_address(proxy: Proxy) -> tuple[str, int]:
    """The ``(host, port)`` a toxiproxy ``Proxy`` listens on, ready for ``open_connection``."""
    host, port = split_host_port(proxy.listen)
    # A real Toxiproxy bound to all interfaces reports 0.0.0.0 / [::]; connect via loopback.
    return ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host), port


@pytest.fixture
def toxiproxy_server() -> Iterator[Toxiproxy]:
    """A ``toxiproxy.Toxiproxy`` client with no proxies, pointed at a ready server."""
    saved = (APIConsumer.host, APIConsumer.port)
    client = Toxiproxy()
    url = os.environ.get(TOXIPROXY_URL_ENV)
    try:
        if url:
            parts = urlsplit(url)
            client.update_api_consumer(parts.hostname or "127.0.0.1", parts.port or 8474)
            if not client.running():
                pytest.fail(f"{TOXIPROXY_URL_ENV}={url} is set but nothing listens there")
            client.destroy_all()
            try:
                yield client
            finally:
                client.destroy_all()
        else:
            with FaultProxyServer() as server:
                client.update_api_consumer(server.host, server.port)
                yield client
    finally:
        APIConsumer.host, APIConsumer.port = saved
