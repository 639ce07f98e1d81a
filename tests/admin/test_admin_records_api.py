"""The admin API's usage, agents, conversations and live state: an org admin sees its
organisation's, never another's; conversations read back from the sidecar's database with
their entries; what nobody owns is adopted only by the unowned organisation's admins, with
one audit line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from admin_support import MODEL, admin_env, assert_error, audit_lines, call, create_key

from tests.auth.auth_support import create_agent, start_conversation
from tests.conftest import MOCK_KEY, MockUpstream, SidecarFactory, wait_for

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}
#: The mock's model, priced (per million tokens) so that usage carries a cost.
PRICES = json.dumps({MODEL: {"input": 2, "output": 6}})


async def _usage(url: str, caller: str, **params: str) -> dict[str, Any]:
    reply = await call(url, "GET", "/admin/v1/usage", caller, params=params)
    assert reply.status == 200, reply.text
    body: dict[str, Any] = reply.body
    return body


async def _upstream_agent(mock: MockUpstream) -> str:
    """An agent made straight at upstream, so the sidecar has no record of it."""
    async with aiohttp.ClientSession() as http, http.post(
            mock.url + "/v1/agents", json={"model": MODEL, "name": "console-made"},
            headers={"Authorization": f"Bearer {MOCK_KEY}"}) as resp:
        assert resp.status == 200
        agent_id: str = (await resp.json())["id"]
        return agent_id


async def test_an_org_admin_sees_only_its_orgs_usage_and_records(
    start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path,
    mock_upstream: MockUpstream,
) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env(
        store_env, log, SIDECAR_PLUGINS_CHAIN="prices,logs,store,auth,persistence,admin",
        SIDECAR_PRICES_OVERRIDES=PRICES))
    url, env = sidecar.url, sidecar.env
    acme = await create_key(env, "root", "admin", "acme")
    alice = await create_key(env, "alice", "user", "acme")
    globex = await create_key(env, "gail", "admin", "globex")
    gus = await create_key(env, "gus", "user", "globex")

    for key in (alice, alice, gus):
        assert (await call(url, "POST", "/v1/chat/completions", key.key, json=CHAT)).status == 200
    mine = await start_conversation(url, alice.key, "tell me about acme")
    theirs = await start_conversation(url, gus.key, "tell me about globex")
    agent = await create_agent(url, acme.key, "acme helper")

    async def counted() -> bool:
        rows = (await _usage(url, acme.key, by="owner"))["data"]
        return [(r["owner_id"], r["requests"]) for r in rows] == [("alice", 3)]

    await wait_for(counted, timeout=10, interval=0.05)
    by_owner = await _usage(url, acme.key, by="owner")
    (row,) = by_owner["data"]
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["currency"] == "USD" and row["unpriced"] == 0 and float(row["cost"]) > 0
    assert by_owner["by"] == ["owner"]
    today = datetime.now(UTC).date()
    detailed = await _usage(url, acme.key, by="owner,key,model,day",
                            **{"from": today.isoformat(), "to": today.isoformat()})
    assert {(r["owner_id"], r["key_id"], r["model"], r["day"]) for r in detailed["data"]} \
        == {("alice", alice.key_id, MODEL, today.isoformat())}
    later = (today + timedelta(days=1)).isoformat()
    assert (await _usage(url, acme.key, **{"from": later}))["data"] == []
    # Filters narrow within the organisation and never reach outside it.
    assert (await _usage(url, acme.key, owner="gus"))["data"] == []
    assert (await _usage(url, acme.key, key=gus.key_id))["data"] == []

    async def globex_counted() -> bool:
        rows = (await _usage(url, globex.key, by="owner"))["data"]
        return [(r["owner_id"], r["requests"]) for r in rows] == [("gus", 2)]

    await wait_for(globex_counted, timeout=10, interval=0.05)

    async def listed(key: str) -> list[dict[str, Any]]:
        reply = await call(url, "GET", "/admin/v1/conversations", key)
        assert reply.status == 200, reply.text
        data: list[dict[str, Any]] = reply.body["data"]
        return data

    await wait_for(lambda: listed(acme.key), timeout=10, interval=0.05)
    assert [(c["id"], c["org"], c["owner"]) for c in await listed(acme.key)] == \
        [(mine, "acme", "alice")]
    assert [c["id"] for c in await listed(globex.key)] == [theirs]
    only = await call(url, "GET", "/admin/v1/conversations", acme.key,
                      params={"owner": "gus"})
    assert only.body["data"] == []

    async def read_back() -> dict[str, Any] | None:
        reply = await call(url, "GET", f"/admin/v1/conversations/{mine}", acme.key)
        assert reply.status in (200, 404), reply.text
        return reply.body if reply.status == 200 and len(reply.body["entries"]) >= 2 else None

    detail = await wait_for(read_back, timeout=10, interval=0.05)
    assert (detail["id"], detail["org"], detail["owner"]) == (mine, "acme", "alice")
    assert detail["entries"][0]["content"] == "tell me about acme"
    assert [e["seq"] for e in detail["entries"]] == sorted(e["seq"] for e in detail["entries"])
    for key, conversation in ((acme.key, theirs), (globex.key, mine)):
        assert_error(await call(url, "GET", f"/admin/v1/conversations/{conversation}", key),
                     404)

    agents = await call(url, "GET", "/admin/v1/agents", acme.key)
    assert [(a["id"], a["org"], a["created_by_key"]) for a in agents.body["data"]] == \
        [(agent, "acme", acme.key_id)]
    assert (await call(url, "GET", "/admin/v1/agents", globex.key)).body["data"] == []

    state = await call(url, "GET", "/admin/v1/state", acme.key)
    assert state.status == 200, state.text
    assert state.body["status"] == "ready"
    assert {"auth", "database", "persistence"} <= set(state.body["checks"])
    assert "persistence_queue_depth" in {g["name"] for g in state.body["gauges"]}
    assert MOCK_KEY not in state.text

    assert audit_lines(log) == [], "reading changed nothing"


async def test_only_the_unowned_orgs_admins_adopt_what_nobody_owns(
    start_sidecar: SidecarFactory, tmp_path: Path, mock_upstream: MockUpstream
) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env({}, log))
    url, env = sidecar.url, sidecar.env
    ops = await create_key(env, "ops", "admin", "default")
    dora = await create_key(env, "dora", "user", "default")
    acme = await create_key(env, "root", "admin", "acme")
    loose = await _upstream_agent(mock_upstream)
    owned = await create_agent(url, acme.key, "acme helper")

    # Only admins of the unowned organisation may even see it; others get 404.
    assert_error(await call(url, "GET", f"/v1/agents/{loose}", dora.key), 404)
    assert_error(await call(url, "POST", f"/admin/v1/agents/{loose}/adopt", acme.key), 404)
    assert_error(await call(url, "POST", f"/admin/v1/agents/{owned}/adopt", ops.key), 404)
    assert_error(await call(url, "POST", f"/admin/v1/agents/{owned}/adopt", acme.key), 409,
                 "already_owned")
    assert_error(await call(url, "POST", f"/admin/v1/agents/{loose}/adopt", ops.key,
                            json={"owner": " "}), 400)

    adopted = await call(url, "POST", f"/admin/v1/agents/{loose}/adopt", ops.key,
                         json={"owner": "dora"})
    assert adopted.status == 200, adopted.text
    assert adopted.body == {"object": "agent", "id": loose, "org": "default", "owner": "dora"}
    # At once on this replica: the proxy's tenancy sees the new owner.
    assert (await call(url, "GET", f"/v1/agents/{loose}", dora.key)).status == 200
    assert_error(await call(url, "POST", f"/admin/v1/agents/{loose}/adopt", ops.key), 409)
    listed = await call(url, "GET", "/admin/v1/agents", ops.key)
    assert [(a["id"], a["org"], a["owner"]) for a in listed.body["data"]] == \
        [(loose, "default", "dora")]

    (line,) = audit_lines(log)
    assert line | {"action": "agent.adopt", "target": loose, "actor_key_id": ops.key_id,
                   "actor_owner": "ops", "org": "default"} == line
    assert line["detail"] == {"owner": "dora"}


async def test_a_conversation_nobody_owns_is_listed_and_adopted_by_the_unowned_orgs_admins(
    start_sidecar: SidecarFactory, tmp_path: Path, mock_upstream: MockUpstream
) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env({}, log))
    url, env = sidecar.url, sidecar.env
    ops = await create_key(env, "ops", "admin", "default")
    dora = await create_key(env, "dora", "user", "default")
    acme = await create_key(env, "root", "admin", "acme")
    async with aiohttp.ClientSession() as http, http.post(
            mock_upstream.url + "/v1/conversations", json={"model": MODEL, "inputs": "hi"},
            headers={"Authorization": f"Bearer {MOCK_KEY}"}) as resp:
        assert resp.status == 200
        loose: str = (await resp.json())["conversation_id"]
    # Only the unowned organisation's admins may touch it; doing so records it here.
    appended = await call(url, "POST", f"/v1/conversations/{loose}", ops.key,
                          json={"inputs": "and more"})
    assert appended.status == 200, appended.text

    async def listed() -> list[dict[str, Any]]:
        reply = await call(url, "GET", "/admin/v1/conversations", ops.key)
        data: list[dict[str, Any]] = reply.body["data"]
        return data

    (row,) = await wait_for(listed, timeout=10, interval=0.05)
    assert (row["id"], row["org"]) == (loose, None)
    assert (await call(url, "GET", "/admin/v1/conversations", acme.key)).body["data"] == []
    assert_error(await call(url, "GET", f"/admin/v1/conversations/{loose}", acme.key), 404)
    shown = await call(url, "GET", f"/admin/v1/conversations/{loose}", ops.key)
    assert shown.status == 200 and shown.body["org"] is None, shown.text
    assert_error(await call(url, "GET", f"/v1/conversations/{loose}", dora.key), 404)

    assert_error(await call(url, "POST", f"/admin/v1/conversations/{loose}/adopt", acme.key,
                            json={"owner": "mallory"}), 404)
    adopted = await call(url, "POST", f"/admin/v1/conversations/{loose}/adopt", ops.key,
                         json={"owner": "dora"})
    assert adopted.body == {"object": "conversation", "id": loose, "org": "default",
                            "owner": "dora"}, adopted.text
    assert (await call(url, "GET", f"/v1/conversations/{loose}", dora.key)).status == 200
    assert [(c["org"], c["owner"]) for c in await listed()] == [("default", "dora")]
    (line,) = audit_lines(log)
    assert (line["action"], line["target"], line["actor_key_id"]) == \
        ("conversation.adopt", loose, ops.key_id)
