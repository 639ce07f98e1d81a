"""Every request ends exactly once: whatever happens, every ``on_end`` observer hears of it
once, with its outcome, and what was accepted is recorded even when the caller hangs up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.auth.auth_support import create_key
from tests.conftest import MockUpstream, Sidecar, SidecarFactory, wait_for
from tests.core.end_plugins import ENDS, OUTCOMES
from tests.persistence.persistence_helpers import MODEL, StoreReader

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "one two three"}]}
COUNTING = "logs,tests.core.end_plugins:counting,tests.core.end_plugins:raising"


async def _post(sidecar: Sidecar, body: dict[str, Any], request_id: str,
                **headers: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=body,
        headers={"X-Request-ID": request_id, **headers},
    ) as resp:
        try:
            text = await resp.text()
        except aiohttp.ClientPayloadError:
            text = ""
        return resp.status, resp.content_type, text


async def _ended_once(sidecar: Sidecar, request_id: str) -> tuple[str, str | None]:
    await wait_for(lambda: sidecar.app[ENDS][request_id] >= 1)
    await asyncio.sleep(0.2)  # a second notification would have come by now
    assert sidecar.app[ENDS][request_id] == 1
    outcome: tuple[str, str | None] = sidecar.app[OUTCOMES][request_id]
    return outcome


@pytest.mark.parametrize("hook", ["on_request", "wrap_upstream", "on_response"])
async def test_a_plugin_that_raises_is_a_mistral_500_and_one_end(
    start_sidecar: SidecarFactory, hook: str
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=COUNTING)
    request_id = f"raise-{hook.replace('_', '-')}"
    status, content_type, text = await _post(sidecar, CHAT, request_id, **{"X-Raise-In": hook})
    assert (status, content_type) == (500, "application/json")
    body = json.loads(text)
    assert body["object"] == "error" and body["code"] == "internal_error"
    assert request_id in body["message"]
    assert "Traceback" not in text and "ValueError" not in text
    assert await _ended_once(sidecar, request_id) == ("error", "internal_error")


async def test_a_plugin_that_raises_mid_stream_cuts_it_and_ends_it_once(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=COUNTING)
    status, _, text = await _post(sidecar, {**CHAT, "stream": True}, "raise-in-stream",
                                  **{"X-Raise-In": "on_stream_event"})
    assert status == 200 and "[DONE]" not in text  # cut, never complete-looking
    assert await _ended_once(sidecar, "raise-in-stream") == ("upstream_broken",
                                                             "internal_error")


async def test_an_observer_that_raises_changes_nothing(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=COUNTING)
    status, _, _ = await _post(sidecar, CHAT, "raise-in-end", **{"X-Raise-In": "on_end"})
    assert status == 200
    assert await _ended_once(sidecar, "raise-in-end") == ("ok", None)


async def test_a_broken_stream_ends_once(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=COUNTING)
    await mock_upstream.fault(action="cut_stream", path_prefix="/v1/chat", after_frames=2)
    status, _, _ = await _post(sidecar, {**CHAT, "stream": True}, "broken-stream")
    assert status == 200
    assert await _ended_once(sidecar, "broken-stream") == ("upstream_broken", "upstream_reset")


async def test_a_caller_that_leaves_mid_stream_ends_once(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=COUNTING)
    await mock_upstream.settings(token_interval_ms=200)
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json={**CHAT, "stream": True},
        headers={"X-Request-ID": "gone"},
    ) as resp:
        await resp.content.readany()
    assert await _ended_once(sidecar, "gone") == ("client_disconnected", None)


# --- hanging up on state changes ---------------------------------------------------------------


async def _hang_up_after_status_line(sidecar: Sidecar, method: str, path: str, key: str,
                                     body: Any = None) -> int:
    """Send one request on a raw socket, read its status line, and close the connection."""
    payload = b"" if body is None else json.dumps(body).encode()
    host = sidecar.url.removeprefix("http://")
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    name, port = host.split(":")
    reader, writer = await asyncio.open_connection(name, int(port))
    writer.write(head.encode() + payload)
    await writer.drain()
    status_line = await reader.readline()
    writer.transport.abort()
    return int(status_line.split()[1])


async def test_state_changes_are_recorded_when_the_caller_hangs_up(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="logs,store,auth,persistence,tests.core.end_plugins:counting",
        SIDECAR_DB_MIGRATE_ON_START="true", SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS="0.02",
        **store_env)
    admin = await create_key(sidecar.env, "root", "admin", "default")
    sdk = sidecar.sdk(api_key=admin.key)
    db = StoreReader(sidecar.env)

    agent = await sdk.beta.agents.create_async(model=MODEL, name="helper")
    assert await _hang_up_after_status_line(
        sidecar, "PATCH", f"/v1/agents/{agent.id}", admin.key, {"name": "renamed"}) == 200
    await wait_for(lambda: (db.one("agents", agent.id) or {}).get("name") == "renamed")

    started = await _hang_up_after_status_line(
        sidecar, "POST", "/v1/conversations", admin.key, {"model": MODEL, "inputs": "hello"})
    assert started == 200
    await wait_for(lambda: db.count("SELECT COUNT(*) AS n FROM conversations") == 1)
    (conversation,) = db.rows("SELECT id FROM conversations")
    conversation_id = conversation["id"]
    assert await _hang_up_after_status_line(
        sidecar, "POST", f"/v1/conversations/{conversation_id}", admin.key,
        {"inputs": "and again"}) == 200
    await wait_for(lambda: len(db.entries(conversation_id)) == 4)
    entry_id = db.entries(conversation_id)[1]["id"]
    assert await _hang_up_after_status_line(
        sidecar, "POST", f"/v1/conversations/{conversation_id}/restart", admin.key,
        {"inputs": "once more", "from_entry_id": entry_id}) == 200
    await wait_for(lambda: db.count("SELECT COUNT(*) AS n FROM conversations") == 2)

    for kind, table, resource in (("conversations", "conversations", conversation_id),
                                  ("agents", "agents", agent.id)):
        assert await _hang_up_after_status_line(
            sidecar, "DELETE", f"/v1/{kind}/{resource}", admin.key) in (200, 204)
        await wait_for(lambda t=table, r=resource: (db.one(t, r) or {}).get("status")
                       == "deleted")
    # Every request the caller walked away from ended exactly once.
    counts = sidecar.app[ENDS]
    await wait_for(lambda: sum(counts.values()) >= 7)
    assert set(counts.values()) == {1}


async def test_the_first_token_of_a_stream_is_timed_by_the_core(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    from tests.observability.obs_contexts import CONTEXTS

    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.observability.obs_contexts")
    await mock_upstream.settings(token_interval_ms=30)
    await _post(sidecar, {**CHAT, "stream": True}, "streamed")
    await _post(sidecar, CHAT, "plain")
    by_id = {ctx.request_id: ctx for ctx in sidecar.app[CONTEXTS]}
    timing = by_id["streamed"].timing
    assert timing.first_token is not None and timing.finished is not None
    assert timing.first_byte_sent is not None
    # The role-only first chunk is not a token; the first content is, and more follow it.
    assert timing.first_byte_sent < timing.first_token < timing.finished - 0.03
    assert by_id["plain"].timing.first_token is None
