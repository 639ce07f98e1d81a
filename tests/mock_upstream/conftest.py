"""Fixtures: a mock upstream served in the test's loop, the real SDK and a raw client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from mistralai.client import Mistral

from proxy.mock_upstream import MockConfig, create_mock_app

API_KEY = "mock-upstream-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def mock_config() -> MockConfig:
    """The configuration the mock under test starts with (override per module/test)."""
    return MockConfig()


@pytest.fixture
async def mock_server(aiohttp_server, mock_config: MockConfig) -> TestServer:  # type: ignore[no-untyped-def]
    """The mock upstream listening on a free loopback port."""
    return await aiohttp_server(create_mock_app(mock_config))


@pytest.fixture
def base_url(mock_server: TestServer) -> str:
    """Root URL of the mock, as given to ``Mistral(server_url=...)``."""
    return str(mock_server.make_url("")).rstrip("/")


@pytest.fixture
async def sdk(base_url: str) -> AsyncIterator[Mistral]:
    """The real SDK pointed at the mock. Call sync methods via ``asyncio.to_thread``."""
    client = Mistral(api_key=API_KEY, server_url=base_url)
    yield client
    await client.__aexit__(None, None, None)
    client.__exit__(None, None, None)


@pytest.fixture
async def http(aiohttp_client, mock_server: TestServer) -> TestClient:  # type: ignore[no-untyped-def]
    """A plain aiohttp client bound to the mock, for raw HTTP and the control API."""
    return await aiohttp_client(mock_server)
