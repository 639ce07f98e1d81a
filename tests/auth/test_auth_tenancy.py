"""Ownership and organisations: private conversations, org-wide agents, filtered lists."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from auth_support import (
    Key,
    auth_env,
    call,
    create_agent,
    create_key,
    is_mistral_error,
    run_cli,
    start_conversation,
    upload_file,
)
from mistralai.client import errors

from plugins.auth import AUTH
from tests.conftest import MOCK_KEY, MockUpstream, Sidecar, SidecarFactory, wait_for

#: Small upstream pages so that every listing below spans several of them.
SCAN = {"SIDECAR_AUTH_LIST_SCAN_PAGE_SIZE": "3"}


def _flat(pages: list[list[str]]) -> list[str]:
    return [item for page in pages for item in page]


def _assert_404(reply: Any) -> None:
    assert reply.status == 404, reply.text
    assert is_mistral_error(reply.body) and reply.body["code"] == "not_found"


async def _list_all(url: str, key: str, path: str, page_size: int) -> list[list[str]]:
    """Every page of an offset-paginated list, as lists of ids (stops at the first empty)."""
    pages: list[list[str]] = []
    for page in range(50):
        reply = await call(url, "GET", path, key,
                           params={"page": str(page), "page_size": str(page_size)})
        assert reply.status == 200, reply.text
        items = reply.body if isinstance(reply.body, list) else reply.body["data"]
        ids = [item["id"] for item in items]
        if not ids:
            return pages
        assert len(ids) <= page_size
        pages.append(ids)
    raise AssertionError("list never ended")


async def _cursor_all(url: str, key: str, page_size: int) -> list[list[str]]:
    """Every page of ``/v1/agents/pages``, following ``next_page_token``."""
    pages: list[list[str]] = []
    params = {"page_size": str(page_size)}
    for _ in range(50):
        reply = await call(url, "GET", "/v1/agents/pages", key, params=params)
        assert reply.status == 200, reply.text
        pages.append([item["id"] for item in reply.body["data"]])
        token = reply.body["next_page_token"]
        if token is None:
            return [p for p in pages if p]
        params = {"page_size": str(page_size), "page_token": token}
    raise AssertionError("cursor never ended")


async def test_conversations_are_private_to_their_owner(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env, **SCAN))
    url, env = sidecar.url, sidecar.env
    alice = await create_key(env, "alice", "user", "acme")
    bob = await create_key(env, "bob", "user", "acme")
    admin = await create_key(env, "root", "admin", "acme")
    outsider = await create_key(env, "eve", "admin", "globex")

    mine: dict[str, list[str]] = {"alice": [], "bob": []}
    for i in range(5):
        mine["alice"].append(await start_conversation(url, alice.key, f"a{i}"))
        if i < 4:
            mine["bob"].append(await start_conversation(url, bob.key, f"b{i}"))
    newest_first = {who: ids[::-1] for who, ids in mine.items()}

    # Lists: only one's own conversations, in upstream order, pages full and disjoint.
    pages = await _list_all(url, alice.key, "/v1/conversations", 2)
    assert pages == [newest_first["alice"][0:2], newest_first["alice"][2:4],
                     newest_first["alice"][4:]]
    assert _flat(await _list_all(url, bob.key, "/v1/conversations", 3)) == newest_first["bob"]
    everyone = _flat(await _list_all(url, admin.key, "/v1/conversations", 4))
    assert sorted(everyone) == sorted(mine["alice"] + mine["bob"])
    assert await _list_all(url, outsider.key, "/v1/conversations", 4) == []

    # The SDK sees the same filtered pages.
    client = sidecar.sdk(alice.key)
    listed = await client.beta.conversations.list_async(page=1, page_size=2)
    assert [c.id for c in listed] == newest_first["alice"][2:4]

    # Another user, and any other organisation, gets 404 exactly as for an unknown id.
    target = mine["alice"][0]
    history = await call(url, "GET", f"/v1/conversations/{target}/history", alice.key)
    entry = history.body["entries"][0]["id"]
    attempts = [
        ("GET", f"/v1/conversations/{target}", None),
        ("GET", f"/v1/conversations/{target}/history", None),
        ("GET", f"/v1/conversations/{target}/messages", None),
        ("POST", f"/v1/conversations/{target}", {"inputs": "hijack"}),
        ("POST", f"/v1/conversations/{target}/restart", {"from_entry_id": entry,
                                                          "inputs": "fork"}),
        ("DELETE", f"/v1/conversations/{target}", None),
    ]
    unknown = await call(url, "GET", "/v1/conversations/conv_doesnotexist", bob.key)
    _assert_404(unknown)
    for key in (bob, outsider):
        for method, path, body in attempts:
            reply = await call(url, method, path, key.key, json=body)
            _assert_404(reply)
            assert reply.body["message"] == unknown.body["message"]
    with pytest.raises(errors.SDKError) as caught:
        await sidecar.sdk(bob.key).beta.conversations.get_async(conversation_id=target)
    assert caught.value.status_code == 404

    # An admin of the same organisation may do all of it.
    for method, path, body in attempts:
        reply = await call(url, method, path, admin.key, json=body)
        assert reply.status in (200, 204), (method, path, reply.text)


async def test_restart_creates_a_conversation_owned_by_the_caller(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env))
    alice = await create_key(sidecar.env, "alice", "user")
    bob = await create_key(sidecar.env, "bob", "user")
    client = sidecar.sdk(alice.key)
    started = await client.beta.conversations.start_async(model="mistral-small-latest",
                                                          inputs="one")
    restarted = await client.beta.conversations.restart_async(
        conversation_id=started.conversation_id, from_entry_id=started.outputs[0].id,
        inputs="two")
    fork = restarted.conversation_id
    assert fork != started.conversation_id
    assert (await call(sidecar.url, "GET", f"/v1/conversations/{fork}", alice.key)).status == 200
    _assert_404(await call(sidecar.url, "GET", f"/v1/conversations/{fork}", bob.key))


async def test_streamed_conversation_is_usable_before_the_stream_ends(
    start_sidecar: SidecarFactory, store_env: dict[str, str], mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env))
    alice = await create_key(sidecar.env, "alice", "user")
    bob = await create_key(sidecar.env, "bob", "user")
    await mock_upstream.settings(token_interval_ms=300, stream_tokens=4)
    headers = {"Authorization": f"Bearer {alice.key}"}
    body = {"model": "mistral-small-latest", "inputs": "stream please", "stream": True}
    async with aiohttp.ClientSession() as session, session.post(
        sidecar.url + "/v1/conversations", json=body, headers=headers
    ) as resp:
        assert resp.status == 200
        conversation_id = None
        async for line in resp.content:
            if line.startswith(b"data:"):
                conversation_id = json.loads(line[5:])["conversation_id"]
                break
        assert conversation_id
        # The stream is still running: the id must already be usable, and still private.
        mine = await call(sidecar.url, "GET", f"/v1/conversations/{conversation_id}",
                          alice.key)
        assert mine.status == 200, mine.text
        _assert_404(await call(sidecar.url, "GET", f"/v1/conversations/{conversation_id}",
                               bob.key))
        rest = await resp.read()
        assert b"conversation.response.done" in rest
    await mock_upstream.settings(token_interval_ms=0)
    # And it was persisted: the same holds after the cache is gone.
    state = sidecar.app[AUTH]

    async def saved() -> bool:
        return not state.ownership.pending

    await wait_for(saved)
    assert await state.ownership._load(("conversation", conversation_id)) is not None


async def _create_upstream_agent(mock: MockUpstream, name: str) -> str:
    """An agent made directly at Mistral (the console), not through the sidecar."""
    async with aiohttp.ClientSession() as session, session.post(
        mock.url + "/v1/agents", json={"model": "mistral-small-latest", "name": name},
        headers={"Authorization": f"Bearer {MOCK_KEY}"},
    ) as resp:
        agent_id: str = (await resp.json())["id"]
        return agent_id


@pytest.mark.filterwarnings("ignore:.*DEPRECATED.*:DeprecationWarning")
async def test_agents_belong_to_their_organisation(
    start_sidecar: SidecarFactory, store_env: dict[str, str], mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env, **SCAN))
    url, env = sidecar.url, sidecar.env
    acme_admin = await create_key(env, "root", "admin", "acme")
    acme_user = await create_key(env, "alice", "user", "acme")
    acme_reader = await create_key(env, "rita", "read_only", "acme")
    globex_admin = await create_key(env, "gary", "admin", "globex")
    globex_user = await create_key(env, "gina", "user", "globex")

    acme = [await create_agent(url, acme_admin.key, f"acme-{i}") for i in range(4)]
    globex = [await create_agent(url, globex_admin.key, f"globex-{i}") for i in range(3)]
    acme_newest = acme[::-1]

    for key in (acme_user, acme_reader, acme_admin):
        assert await _list_all(url, key.key, "/v1/agents", 3) == [acme_newest[:3],
                                                                  acme_newest[3:]]
        assert await _cursor_all(url, key.key, 3) == [acme_newest[:3], acme_newest[3:]]
        assert await _cursor_all(url, key.key, 4) == [acme_newest]
        reply = await call(url, "GET", f"/v1/agents/{acme[0]}", key.key)
        assert reply.status == 200
    assert _flat(await _list_all(url, globex_user.key, "/v1/agents", 2)) == globex[::-1]
    sdk_page = await sidecar.sdk(acme_user.key).beta.agents.list_async(page=0, page_size=2)
    assert [a.id for a in sdk_page] == acme_newest[:2]

    # Using an agent needs it to belong to the caller's organisation.
    started = await call(url, "POST", "/v1/conversations", acme_user.key,
                         json={"agent_id": acme[0], "inputs": "hi"})
    assert started.status == 200, started.text
    for key in (globex_user, globex_admin):
        _assert_404(await call(url, "GET", f"/v1/agents/{acme[0]}", key.key))
        _assert_404(await call(url, "POST", "/v1/conversations", key.key,
                               json={"agent_id": acme[0], "inputs": "hi"}))
        _assert_404(await call(url, "POST", "/v1/agents/completions", key.key,
                               json={"agent_id": acme[0],
                                     "messages": [{"role": "user", "content": "hi"}]}))
        _assert_404(await call(url, "GET", f"/v1/conversations/{started.body['conversation_id']}",
                               key.key))
    _assert_404(await call(url, "PATCH", f"/v1/agents/{acme[0]}", globex_admin.key,
                           json={"description": "mine now"}))
    _assert_404(await call(url, "DELETE", f"/v1/agents/{acme[0]}", globex_admin.key))


async def test_agents_made_elsewhere_are_unowned_org_admin_only_until_adopted(
    start_sidecar: SidecarFactory, store_env: dict[str, str], mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env, SIDECAR_AUTH_CACHE_TTL_SECONDS="0.2"))
    url, env = sidecar.url, sidecar.env
    # Unrecorded resources belong to auth.unowned_org ("default"): only its admins see them.
    owner_admin = await create_key(env, "root", "admin", "default")
    admin = await create_key(env, "boss", "admin", "acme")
    user = await create_key(env, "alice", "user", "acme")
    outsider = await create_key(env, "gina", "user", "globex")
    console = await _create_upstream_agent(mock_upstream, "from-console")

    assert (await call(url, "GET", f"/v1/agents/{console}", owner_admin.key)).status == 200
    assert _flat(await _list_all(url, owner_admin.key, "/v1/agents", 5)) == [console]
    for key in (admin, user):
        _assert_404(await call(url, "GET", f"/v1/agents/{console}", key.key))
        assert await _list_all(url, key.key, "/v1/agents", 5) == []

    adopted = await run_cli(env, "agents", "adopt", console, "--org", "acme")
    assert adopted.code == 0, adopted.err

    async def visible_to_user() -> bool:
        return (await call(url, "GET", f"/v1/agents/{console}", user.key)).status == 200

    await wait_for(visible_to_user)
    assert _flat(await _list_all(url, user.key, "/v1/agents", 5)) == [console]
    _assert_404(await call(url, "GET", f"/v1/agents/{console}", outsider.key))
    _assert_404(await call(url, "GET", f"/v1/agents/{console}", owner_admin.key))


async def test_files_and_batch_jobs_are_private(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env, **SCAN))
    url, env = sidecar.url, sidecar.env
    alice = await create_key(env, "alice", "user")
    bob = await create_key(env, "bob", "user")
    files: dict[str, list[str]] = {"alice": [], "bob": []}
    for i in range(4):
        for who, key in (("alice", alice), ("bob", bob)):
            if who == "bob" and i == 3:
                continue
            uploaded = await upload_file(url, key.key, f'{{"n": {i}}}\n'.encode())
            assert uploaded.status == 200, uploaded.text
            files[who].append(uploaded.body["id"])
    listed = await call(url, "GET", "/v1/files", alice.key, params={"page_size": "2"})
    assert listed.status == 200 and listed.body["total"] == 4 and len(listed.body["data"]) == 2
    pages = await _list_all(url, alice.key, "/v1/files", 3)
    assert sorted(_flat(pages)) == sorted(files["alice"]) and len(pages) == 2

    foreign = files["bob"][0]
    _assert_404(await call(url, "GET", f"/v1/files/{foreign}", alice.key))
    _assert_404(await call(url, "GET", f"/v1/files/{foreign}/content", alice.key))
    _assert_404(await call(url, "DELETE", f"/v1/files/{foreign}", alice.key))
    job_body = {"endpoint": "/v1/chat/completions", "model": "mistral-small-latest",
                "input_files": [foreign]}
    _assert_404(await call(url, "POST", "/v1/batch/jobs", alice.key, json=job_body))
    job = await call(url, "POST", "/v1/batch/jobs", bob.key, json=job_body)
    assert job.status == 200, job.text
    _assert_404(await call(url, "GET", f"/v1/batch/jobs/{job.body['id']}", alice.key))
    _assert_404(await call(url, "POST", f"/v1/batch/jobs/{job.body['id']}/cancel", alice.key))
    jobs = await call(url, "GET", "/v1/batch/jobs", alice.key)
    assert jobs.status == 200 and jobs.body["data"] == [] and jobs.body["total"] == 0
    assert [j["id"] for j in (await call(url, "GET", "/v1/batch/jobs", bob.key)).body["data"]] \
        == [job.body["id"]]


async def _sidecar_pair(start_sidecar: SidecarFactory, pg: dict[str, str]
                        ) -> tuple[Sidecar, Sidecar]:
    first = await start_sidecar(**auth_env(pg))
    second = await start_sidecar(**auth_env(pg))
    return first, second


async def test_ownership_is_shared_between_replicas(
    start_sidecar: SidecarFactory, pg_database: dict[str, str]
) -> None:
    first, second = await _sidecar_pair(start_sidecar, pg_database)
    alice: Key = await create_key(first.env, "alice", "user")
    bob: Key = await create_key(first.env, "bob", "user")
    conversation = await start_conversation(first.url, alice.key)
    # Recorded before the answer was released: the other replica knows at once.
    assert (await call(second.url, "GET", f"/v1/conversations/{conversation}",
                       alice.key)).status == 200
    _assert_404(await call(second.url, "GET", f"/v1/conversations/{conversation}", bob.key))
