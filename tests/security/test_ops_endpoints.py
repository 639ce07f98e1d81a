"""The operational endpoints: /healthz and the status of /readyz stay open for probes, while
the details of /readyz and /metrics answer only with the ops token or on the ops port, and
never carry a secret.

This module is also a plugin (``SIDECAR_PLUGINS_CHAIN=...,tests.security.test_ops_endpoints``):
its readiness check carelessly reports configured secrets, as a third-party plugin might.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy import hookimpl
from proxy.app import SETTINGS
from tests.conftest import (
    MOCK_KEY,
    MockUpstream,
    Sidecar,
    SidecarFactory,
    SidecarProcess,
    free_port,
    wait_for,
)

TOKEN = "ops-token-5f1c9e27b3"
LEAKY = "tests.security.test_ops_endpoints"
REDIS_PASSWORD = "redis-pass-a8d2c4"


@hookimpl
def readiness(app: web.Application) -> dict[str, Any]:
    """A check whose detail names the upstream key and a URL with a password in it."""
    settings = app[SETTINGS]
    keys = ",".join(settings["upstream.api_key"])
    return {"leaky": {
        "ok": True,
        "detail": f"using key {keys} and redis://:{REDIS_PASSWORD}@cache:6379/0",
        "nested": [{"dsn": "postgresql://sidecar:db-pass-7e61@db/sidecar"}],
        "token": settings["ops.token"],
    }}


async def _get(url: str, path: str, token: str | None = None
               ) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http, http.get(url + path, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def _json(url: str, path: str, token: str | None = None) -> tuple[int, Any]:
    status, headers, text = await _get(url, path, token)
    assert headers["Content-Type"].startswith("application/json"), text
    return status, json.loads(text)


def _mistral_error(body: Any, code: str) -> None:
    assert set(body) == {"object", "message", "type", "code"}, body
    assert body["object"] == "error" and body["code"] == code, body


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def _ops_site(sidecar: Sidecar, port: int) -> str:
    """Listen on ``port`` too, with the same application (what ``serve`` does for
    ``ops.port``)."""
    runner = sidecar.server.runner
    assert runner is not None
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return f"http://127.0.0.1:{port}"


async def test_without_settings_a_pod_local_sidecar_shows_everything(
        start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics,breaker")
    status, body = await _json(sidecar.url, "/readyz")
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["breaker"]["state"] == "closed"
    status, _headers, text = await _get(sidecar.url, "/metrics")
    assert status == 200 and "mistral_sidecar_build_info" in text


async def test_the_ops_token_guards_details_and_metrics(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics,breaker", SIDECAR_OPS_TOKEN=TOKEN)
    url = sidecar.url

    assert (await _json(url, "/healthz"))[0] == 200
    for wrong in (None, "", "not-the-token", TOKEN + "x", TOKEN[:-1], MOCK_KEY):
        assert await _json(url, "/readyz", wrong) == (200, {"status": "ready"}), wrong
        status, headers, text = await _get(url, "/metrics", wrong)
        assert status == 401 and headers.get("WWW-Authenticate") == "Bearer", wrong
        _mistral_error(json.loads(text), "unauthorized")
        assert "mistral_sidecar" not in text and TOKEN not in text

    # Another scheme carrying the token is not the token either.
    async with aiohttp.ClientSession() as http, http.get(
            url + "/metrics", headers={"Authorization": f"Basic {TOKEN}"}) as resp:
        assert resp.status == 401

    status, body = await _json(url, "/readyz", TOKEN)
    assert status == 200 and body["checks"]["breaker"]["state"] == "closed"
    status, _headers, text = await _get(url, "/metrics", TOKEN)
    assert status == 200
    assert any(f.name == "mistral_sidecar_build_info"
               for f in text_string_to_metric_families(text))


async def test_an_unready_sidecar_tells_probes_its_status_and_nothing_more(
        start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="ratelimit", SIDECAR_OPS_TOKEN=TOKEN, REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(free_port()), SIDECAR_RATELIMIT_FAILURE_MODE="closed")
    assert await _json(sidecar.url, "/readyz") == (503, {"status": "unready"})
    status, body = await _json(sidecar.url, "/readyz", TOKEN)
    assert status == 503 and body["checks"]["ratelimit"]["redis"]["ok"] is False


async def test_the_ops_port_alone_serves_details_and_metrics(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream) -> None:
    port = free_port()
    sidecar = spawn_sidecar(SIDECAR_PLUGINS_CHAIN="metrics,breaker", SIDECAR_OPS_PORT=str(port),
                            MISTRAL_BASE_URL=mock_upstream.url)
    ops = f"http://127.0.0.1:{port}"
    # `serve` opens the ops port right after the main one.
    await wait_for(lambda: _listening(port))

    # Main port: probes and the API, no details.
    assert (await _json(sidecar.url, "/healthz"))[0] == 200
    assert await _json(sidecar.url, "/readyz") == (200, {"status": "ready"})
    status, body = await _json(sidecar.url, "/metrics")
    assert status == 404
    _mistral_error(body, "not_found")
    async with aiohttp.ClientSession() as http, http.get(
            sidecar.url + "/v1/models", headers={"Authorization": "Bearer caller"}) as resp:
        assert resp.status == 200 and (await resp.json())["object"] == "list"

    # Ops port: the details, and no way to the API (nor to the upstream key).
    assert (await _json(ops, "/healthz"))[0] == 200
    status, body = await _json(ops, "/readyz")
    assert status == 200 and body["checks"]["breaker"]["state"] == "closed"
    status, _headers, text = await _get(ops, "/metrics")
    assert status == 200 and "mistral_sidecar_build_info" in text
    for method in ("GET", "POST"):
        async with aiohttp.ClientSession() as http, http.request(
                method, ops + "/v1/models", headers={"Authorization": "Bearer caller"}) as resp:
            assert resp.status == 404
            _mistral_error(await resp.json(), "not_found")


async def test_port_and_token_together_both_apply(start_sidecar: SidecarFactory) -> None:
    port = free_port()
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics", SIDECAR_OPS_PORT=str(port),
                                  SIDECAR_OPS_TOKEN=TOKEN)
    ops = await _ops_site(sidecar, port)
    assert (await _get(sidecar.url, "/metrics", TOKEN))[0] == 404
    assert await _json(sidecar.url, "/readyz", TOKEN) == (200, {"status": "ready"})
    assert (await _get(ops, "/metrics"))[0] == 401
    assert await _json(ops, "/readyz") == (200, {"status": "ready"})
    assert (await _get(ops, "/metrics", TOKEN))[0] == 200
    assert "checks" in (await _json(ops, "/readyz", TOKEN))[1]


async def test_readyz_details_never_carry_secrets(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN=f"breaker,{LEAKY}", SIDECAR_OPS_TOKEN=TOKEN,
        MISTRAL_API_KEY=f"{MOCK_KEY},second-upstream-key-93b1")
    status, _headers, text = await _get(sidecar.url, "/readyz", TOKEN)
    assert status == 200
    for secret in (MOCK_KEY, "second-upstream-key-93b1", TOKEN, REDIS_PASSWORD, "db-pass-7e61"):
        assert secret not in text, secret
    leaky = json.loads(text)["checks"]["leaky"]
    assert leaky["detail"] == ("using key [redacted],[redacted] and "
                               "redis://:[redacted]@cache:6379/0")
    assert leaky["nested"] == [{"dsn": "postgresql://sidecar:[redacted]@db/sidecar"}]
    assert leaky["token"] == "[redacted]"
