"""Passthrough mode: callers' own Mistral keys go upstream; identity is the key's fingerprint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from auth_support import auth_env, call, run_cli

from plugins.auth.keys import fingerprint
from proxy.mock_upstream import MockConfig, create_mock_app
from tests.conftest import MOCK_KEY, SidecarFactory

KEY_A = "mistral-key-of-team-a-0123456789"
KEY_B = "mistral-key-of-team-b-9876543210"
CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def two_key_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> str:
    """A mock Mistral API that accepts exactly KEY_A and KEY_B (not the sidecar's key)."""
    server = await aiohttp_server(create_mock_app(MockConfig(api_keys=frozenset({KEY_A, KEY_B}))))
    return str(server.make_url("")).rstrip("/")


async def _requests(upstream: str) -> list[dict[str, object]]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
            upstream + "/__mock__/requests") as resp:
        records: list[dict[str, object]] = await resp.json()
        return records


async def test_callers_key_goes_upstream_and_ownership_follows_its_fingerprint(
    start_sidecar: SidecarFactory, two_key_upstream: str, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(
        store_env, MISTRAL_BASE_URL=two_key_upstream, SIDECAR_AUTH_MODE="passthrough"))
    url = sidecar.url

    missing = await call(url, "POST", "/v1/chat/completions", json=CHAT)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")

    ok = await call(url, "POST", "/v1/chat/completions", KEY_A, json=CHAT)
    assert ok.status == 200, ok.text
    last = (await _requests(two_key_upstream))[-1]
    assert ["Authorization", f"Bearer {KEY_A}"] in last["headers"]  # type: ignore[operator]
    assert MOCK_KEY not in str(last["headers"])
    # A key upstream refuses is refused by upstream itself.
    assert (await call(url, "POST", "/v1/chat/completions", "not-a-mistral-key",
                       json=CHAT)).status == 401

    started = await call(url, "POST", "/v1/conversations", KEY_A,
                         json={"model": "mistral-small-latest", "inputs": "mine"})
    assert started.status == 200
    conversation = started.body["conversation_id"]
    assert (await call(url, "GET", f"/v1/conversations/{conversation}", KEY_A)).status == 200
    other = await call(url, "GET", f"/v1/conversations/{conversation}", KEY_B)
    assert other.status == 404
    assert [c["id"] for c in (await call(url, "GET", "/v1/conversations", KEY_A)).body] == \
        [conversation]
    assert (await call(url, "GET", "/v1/conversations", KEY_B)).body == []
    # Default passthrough role is user: no agent management.
    assert (await call(url, "POST", "/v1/agents", KEY_A,
                       json={"model": "mistral-small-latest", "name": "x"})).status == 403


async def test_passthrough_roles_per_fingerprint(
    start_sidecar: SidecarFactory, two_key_upstream: str, tmp_path: Path
) -> None:
    printed = await run_cli({"SIDECAR_PLUGINS_CHAIN": "store,auth",
                             "SIDECAR_AUTH_MODE": "passthrough",
                             "SIDECAR_SERVER_DATA_DIR": str(tmp_path)},
                            "keys", "fingerprint", stdin=KEY_A + "\n")
    assert printed.code == 0 and printed.last_line == fingerprint(KEY_A)
    assert KEY_A not in printed.out
    config = tmp_path / "sidecar.yaml"
    config.write_text(f"auth:\n  passthrough:\n    roles:\n      {printed.last_line}: admin\n")
    sidecar = await start_sidecar(
        config_file=config,
        **auth_env({}, MISTRAL_BASE_URL=two_key_upstream, SIDECAR_AUTH_MODE="passthrough",
                   SIDECAR_AUTH_PASSTHROUGH_ROLE="read_only"))
    agent = await call(sidecar.url, "POST", "/v1/agents", KEY_A,
                       json={"model": "mistral-small-latest", "name": "team-a"})
    assert agent.status == 200, agent.text
    assert (await call(sidecar.url, "POST", "/v1/chat/completions", KEY_B,
                       json=CHAT)).status == 403
    assert (await call(sidecar.url, "GET", "/v1/models", KEY_B)).status == 200
    # Each fingerprint is its own organisation by default.
    assert (await call(sidecar.url, "GET", f"/v1/agents/{agent.body['id']}", KEY_B)).status \
        == 404
