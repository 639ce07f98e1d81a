"""Shared fixtures: the mock upstream, sidecars in-process and as processes, real PostgreSQL
and Redis with a fresh database / key prefix per test."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.cli import all_declared_settings
from proxy.door import DoorConfig, DoorRunner
from proxy.loader import load
from proxy.mock_upstream import MockConfig, create_mock_app

pytest_plugins = ["tests.support.toxiproxy_fixture"]

REPO = Path(__file__).resolve().parent.parent
MOCK_KEY = "mock-upstream-key"
PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- mock upstream ---------------------------------------------------------------------------


@dataclass
class MockUpstream:
    """A running mock Mistral API and helpers for its control API."""

    url: str
    server: TestServer

    async def _call(self, method: str, path: str, payload: Any = None) -> Any:
        async with aiohttp.ClientSession() as session, session.request(
            method, self.url + path, json=payload
        ) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json() if resp.content_type == "application/json" else None

    async def fault(self, **spec: Any) -> Any:
        """Register a fault (see ``POST /__mock__/faults``)."""
        return await self._call("POST", "/__mock__/faults", spec)

    async def settings(self, **values: Any) -> Any:
        """Change latency, token interval or stream length at run time."""
        return await self._call("PUT", "/__mock__/settings", values)

    async def requests(self) -> list[dict[str, Any]]:
        """Requests the mock received on /v1 (most recent last)."""
        data = await self._call("GET", "/__mock__/requests")
        return list(data["requests"] if isinstance(data, dict) else data)


@pytest.fixture
async def mock_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> MockUpstream:
    """A fresh mock upstream on a random loopback port, accepting ``MOCK_KEY``."""
    app = create_mock_app(MockConfig(api_keys=frozenset({MOCK_KEY})))
    server = await aiohttp_server(app)
    return MockUpstream(url=str(server.make_url("")).rstrip("/"), server=server)


# --- sidecars --------------------------------------------------------------------------------


@dataclass
class Sidecar:
    """A sidecar running in the test's event loop on a real port."""

    url: str
    app: web.Application
    server: TestServer
    env: dict[str, str] = field(default_factory=dict)

    def sdk(self, api_key: str = "caller-key", **kwargs: Any) -> Any:
        """A real ``mistralai`` client pointed at this sidecar."""
        from mistralai.client import Mistral

        return Mistral(api_key=api_key, server_url=self.url, **kwargs)


SidecarFactory = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Environment every test sidecar starts from: isolated data dir, no outside config."""
    return {
        "MISTRAL_API_KEY": MOCK_KEY,
        "SIDECAR_SERVER_DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "INFO",
        # Tests read a request's lines right after its answer: no batching interval.
        "SIDECAR_LOG_ACCESS_FLUSH_SECONDS": "0",
    }


@functools.cache
def _current_names() -> dict[str, str]:
    """Deprecated environment variable -> the name that replaced it."""
    return {old: setting.env for setting in all_declared_settings()
            for old in setting.deprecated_env}


def merged_env(*sources: dict[str, str]) -> dict[str, str]:
    """``sources`` merged, later ones winning, with deprecated names read as their current
    ones (a test may still say ``SIDECAR_PLUGINS_CHAIN`` where the base says the new name)."""
    names = _current_names()
    merged: dict[str, str] = {}
    for source in sources:
        for name, value in source.items():
            merged[names.get(name, name)] = value
    return merged


class DoorTestServer(TestServer):
    """A test server that serves its application through the sidecar's door
    (:class:`proxy.door.DoorRunner`), as ``mistral-sidecar serve`` does."""

    def __init__(self, app: web.Application, door: DoorConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.door = door

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return DoorRunner(self.app, self.door)


@pytest.fixture
async def start_sidecar(
    mock_upstream: MockUpstream,
    base_env: dict[str, str],
) -> AsyncIterator[SidecarFactory]:
    """Start an in-process sidecar in front of the mock upstream.

    Call with environment overrides, e.g. ``await start_sidecar(SIDECAR_PLUGINS_CHAIN="via")``;
    ``config_file=`` names a YAML file.
    """
    servers: list[DoorTestServer] = []

    async def start(config_file: Path | None = None, **env_overrides: str) -> Sidecar:
        env = merged_env(base_env, {"MISTRAL_BASE_URL": mock_upstream.url}, env_overrides)
        settings, chain = load(config_file, env)
        app = create_app(settings, chain)
        server = DoorTestServer(app, DoorConfig.from_settings(settings))
        await server.start_server()
        servers.append(server)
        return Sidecar(url=str(server.make_url("")).rstrip("/"), app=app, server=server,
                       env=env)

    yield start
    while servers:
        await servers.pop().close()


@dataclass
class SidecarProcess:
    """A sidecar started as ``mistral-sidecar serve`` in its own process."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send a signal to the process."""
        self.proc.send_signal(signum)

    def rss_kib(self) -> int:
        """Current resident memory of the process, KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"sidecar did not become healthy:\n{log.read_text()}")


@pytest.fixture
def spawn_sidecar(
    tmp_path: Path, base_env: dict[str, str]
) -> Iterator[Callable[..., SidecarProcess]]:
    """Start sidecars as separate processes (for signals, memory and multi-replica tests)."""
    started: list[SidecarProcess] = []

    def spawn(*extra_args: str, **env_overrides: str) -> SidecarProcess:
        port = free_port()
        env = dict(os.environ)
        for name in list(env):
            if name.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_")):
                del env[name]
        env.update(merged_env(base_env, env_overrides, {"SIDECAR_SERVER_PORT": str(port)}))
        log = tmp_path / f"sidecar-{port}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", *extra_args],
            env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
        )
        handle.close()
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, log)
        except RuntimeError:
            proc.kill()
            raise
        sidecar = SidecarProcess(url=url, proc=proc, log_path=log)
        started.append(sidecar)
        return sidecar

    yield spawn
    for sidecar in started:
        if sidecar.proc.poll() is None:
            sidecar.proc.kill()
            sidecar.proc.wait(timeout=10)


@dataclass
class MockProcess:
    """A mock upstream started as ``mistral-sidecar mock-upstream`` in its own process."""

    url: str
    proc: subprocess.Popen[bytes]


@pytest.fixture
def spawn_mock(tmp_path: Path) -> Iterator[Callable[..., MockProcess]]:
    """Start the mock upstream as a separate process (when the sidecar is one too)."""
    started: list[MockProcess] = []

    def spawn(*extra_args: str) -> MockProcess:
        port = free_port()
        log = tmp_path / f"mock-{port}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "mock-upstream", "--port", str(port),
             "--api-key", MOCK_KEY, *extra_args],
            stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
        )
        handle.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.05)
        mock = MockProcess(url, proc)
        started.append(mock)
        return mock

    yield spawn
    for mock in started:
        mock.proc.kill()
        mock.proc.wait(timeout=10)


# --- PostgreSQL and Redis --------------------------------------------------------------------


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[dict[str, str]]:
    """Create an empty PostgreSQL database, yield the DB_* environment to reach it, drop it."""
    import psycopg

    name = f"sidecar_test_{uuid.uuid4().hex[:12]}"
    admin = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"DB_HOST": PG_HOST, "DB_PORT": str(PG_PORT), "DB_NAME": name, "DB_USER": PG_USER}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database() -> Iterator[dict[str, str]]:
    """A fresh, empty PostgreSQL database; yields the DB_* environment to reach it."""
    with fresh_pg_database() as env:
        yield env


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Runs a test once against the embedded SQLite store and once against PostgreSQL."""
    if request.param == "sqlite":
        return {"SIDECAR_SERVER_DATA_DIR": str(tmp_path / "sqlite-data")}
    pg: dict[str, str] = request.getfixturevalue("pg_database")
    return pg


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A unique Redis key prefix; every key under it is deleted afterwards."""
    import redis.asyncio as redis

    prefix = f"sidecar-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
def redis_env(redis_prefix: str) -> dict[str, str]:
    """Environment pointing a sidecar at the test Redis with a fresh key prefix."""
    return {"REDIS_HOST": REDIS_HOST, "REDIS_PORT": str(REDIS_PORT),
            "SIDECAR_REDIS_PREFIX": redis_prefix}


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0,
                   interval: float = 0.01) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail the test after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
