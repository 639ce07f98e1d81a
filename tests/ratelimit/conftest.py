"""Fixtures the rate-limit and concurrency tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for plain HTTP requests."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=["redis", "memory"])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The shared Redis limiter, and the in-process one (no REDIS_HOST)."""
    if request.param == "memory":
        return {}
    env: dict[str, str] = request.getfixturevalue("redis_env")
    return env
