"""Secrets never reach a log line, whoever logs them and in whatever shape: every configured
secret (upstream keys, database and Redis passwords, the ops token, collector headers), any
sidecar caller key and any bearer token, in ordinary lines, aiohttp's own loggers, access lines
and exception tracebacks; and an exception holding a key is a JSON 500 that does not show it.

A deliberately careless plugin (``tests.security.door_support``) logs them on request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import MOCK_KEY, MockProcess, Sidecar, SidecarFactory, SidecarProcess
from tests.security.door_support import (
    assert_mistral_error,
    caller_key,
    exchange,
    key_public_part,
    key_secret,
    read_log_lines,
    request_head,
)

KEY = caller_key()
OTHER_UPSTREAM_KEY = "upstream-" + os.urandom(12).hex()
SECRETS = {
    "MISTRAL_API_KEY": f"{MOCK_KEY},{OTHER_UPSTREAM_KEY}",
    "DB_PASSWORD": "db-pw-" + os.urandom(8).hex(),
    "REDIS_PASSWORD": "redis-pw-" + os.urandom(8).hex(),
    "SIDECAR_OPS_TOKEN": "ops-" + os.urandom(12).hex(),
    "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-token=otel-" + os.urandom(8).hex(),
}
#: Every string that must never be logged.
NEVER_LOGGED = [MOCK_KEY, OTHER_UPSTREAM_KEY, KEY, key_secret(KEY),
                *(value for name, value in SECRETS.items() if name != "MISTRAL_API_KEY")]
CHAIN = "logs,tests.security.door_support,tracing,store,ratelimit"


def _env(**extra: str) -> dict[str, str]:
    return {"SIDECAR_PLUGINS_CHAIN": CHAIN, "SIDECAR_DB_MIGRATE_ON_START": "true", **SECRETS,
            **extra}


def _assert_nothing_secret(text: str) -> None:
    for secret in NEVER_LOGGED:
        assert secret not in text, secret


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory, tmp_path: Path) -> Sidecar:
    """The careless plugin with the store, rate limiter and tracing (whose secrets count)."""
    return await start_sidecar(**_env(SIDECAR_LOG_FILE=str(tmp_path / "sidecar.log")))


async def _get(url: str, path: str, **headers: str) -> tuple[int, str]:
    """GET ``path`` with ``headers`` (``X_Request_ID`` is sent as ``X-Request-ID``)."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    async with aiohttp.ClientSession() as http, http.get(url + path, headers=sent) as resp:
        return resp.status, await resp.text()


def _lines(tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    text = (tmp_path / "sidecar.log").read_text()
    return text, read_log_lines(text)


async def test_secrets_logged_through_aiohttps_loggers_are_redacted(
        sidecar: Sidecar, tmp_path: Path) -> None:
    await _get(sidecar.url, "/v1/models", Authorization=f"Bearer {KEY}",
               X_Caller_Key=KEY, X_Door_Test_Leak="1")
    await asyncio.sleep(0.05)
    text, lines = _lines(tmp_path)
    _assert_nothing_secret(text)
    # (The mock upstream, in this process too, writes aiohttp access lines of its own.)
    leaks = [line for line in lines if line["logger"] in ("aiohttp.server", "aiohttp.access")
             and "Door-Test-Leak" in line["message"]]
    assert len(leaks) == 2, lines
    assert all("[REDACTED]" in line["message"] for line in leaks)
    # The public part of a caller key stays, to tell keys apart.
    assert key_public_part(KEY) + "[REDACTED]" in leaks[0]["message"]


async def test_an_exception_holding_a_key_is_a_json_500_with_a_redacted_traceback(
        sidecar: Sidecar, tmp_path: Path) -> None:
    # A bare key (no "Bearer"): only its shape says it is a key.
    answer = await exchange(sidecar.url, request_head(
        sidecar.url, "/v1/models",
        extra=f"Authorization: {KEY}\r\nX-Door-Test-Crash: 1\r\nConnection: close\r\n"))
    assert_mistral_error(answer, 500, "internal_error")
    assert KEY.encode() not in answer.raw and b"plugin crashed" not in answer.raw
    await asyncio.sleep(0.05)
    text, lines = _lines(tmp_path)
    _assert_nothing_secret(text)
    crashed = [line for line in lines if "plugin crashed" in line.get("exc_info", "")]
    assert len(crashed) == 1, lines
    assert "RuntimeError: plugin crashed while holding '" in crashed[0]["exc_info"]
    assert "[REDACTED]" in crashed[0]["exc_info"]


async def test_a_key_in_the_path_is_redacted_from_the_access_line(
        sidecar: Sidecar, tmp_path: Path) -> None:
    await _get(sidecar.url, f"/v1/files/{KEY}?purpose={KEY}",
               Authorization=f"Bearer {KEY}", X_Request_ID="key-in-path")
    await asyncio.sleep(0.05)
    text, lines = _lines(tmp_path)
    _assert_nothing_secret(text)
    access = [line for line in lines if line["logger"] == "mistral_sidecar.access"
              and line.get("request_id") == "key-in-path"]
    assert len(access) == 1, lines
    assert "[REDACTED]" in access[0]["path"]


async def test_the_served_sidecar_logs_no_secret(
        spawn_mock: Callable[..., MockProcess],
        spawn_sidecar: Callable[..., SidecarProcess]) -> None:
    mock = spawn_mock()
    served = spawn_sidecar(**_env(MISTRAL_BASE_URL=mock.url))
    await _get(served.url, "/v1/models", Authorization=f"Bearer\t{KEY}", X_Door_Test_Leak="1")
    await _get(served.url, f"/v1/files/{KEY}", Authorization=KEY, X_Door_Test_Crash="1")
    await exchange(served.url, b"GET /v1/models HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer"
                               b"\r\n %s\r\n\r\n" % KEY.encode())
    deadline = time.monotonic() + 5
    while served.output().count("[REDACTED]") < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    output = served.output()
    assert output.count("[REDACTED]") >= 3, output
    _assert_nothing_secret(output)
