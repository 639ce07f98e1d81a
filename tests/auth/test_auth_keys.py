"""Sidecar keys end to end: 401s, revocation, rotation, expiry, the keys CLI, hashing at rest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from auth_support import auth_env, call, create_key, is_mistral_error, run_cli

from tests.conftest import MOCK_KEY, SidecarFactory, wait_for

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}


def _assert_401(reply: Any, presented: str | None = None) -> None:
    assert reply.status == 401, reply.text
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert is_mistral_error(reply.body)
    assert reply.body["type"] == "authentication_error"
    if presented:
        assert presented not in reply.text


async def test_missing_malformed_wrong_and_unknown_keys_get_401(
    start_sidecar: SidecarFactory, store_env: dict[str, str], mock_upstream: Any
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env))
    key = await create_key(sidecar.env, "alice", "user")
    wrong_secret = key.key[: -4] + ("AAAA" if not key.key.endswith("AAAA") else "BBBB")
    unknown_id = "sk-sidecar-0123456789abcdef-" + key.key.split("-", 3)[3]
    before = len(await mock_upstream.requests())

    _assert_401(await call(sidecar.url, "POST", "/v1/chat/completions", json=CHAT))
    for header in (f"Basic {key.key}", "Bearer", f"Bearer  {key.key} extra", "Bearer nope",
                   f"Bearer {MOCK_KEY}"):
        reply = await call(sidecar.url, "POST", "/v1/chat/completions", json=CHAT,
                           headers={"Authorization": header})
        _assert_401(reply, key.key)
    for presented in (wrong_secret, unknown_id):
        _assert_401(await call(sidecar.url, "POST", "/v1/chat/completions", presented,
                               json=CHAT), presented)

    assert len(await mock_upstream.requests()) == before, "rejected requests reached upstream"
    ok = await call(sidecar.url, "POST", "/v1/chat/completions", key.key, json=CHAT)
    assert ok.status == 200, ok.text
    # Upstream received the real key, never the caller's.
    seen = (await mock_upstream.requests())[-1]
    assert key.key not in json.dumps(seen)


async def test_sdk_with_valid_and_invalid_keys(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    from mistralai.client.errors import SDKError

    sidecar = await start_sidecar(**auth_env(store_env))
    key = await create_key(sidecar.env, "alice", "user")
    client = sidecar.sdk(key.key)
    answer = await asyncio.to_thread(
        client.chat.complete, model="mistral-small-latest",
        messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content
    with pytest.raises(SDKError) as caught:
        await asyncio.to_thread(
            sidecar.sdk("sk-sidecar-0123456789abcdef-" + "x" * 43).models.list)
    assert caught.value.status_code == 401


async def test_revoked_and_rotated_keys_stop_working(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env, SIDECAR_AUTH_CACHE_TTL_SECONDS="0.2"))
    revoked = await create_key(sidecar.env, "alice", "user")
    rotated = await create_key(sidecar.env, "bob", "user")
    for key in (revoked, rotated):
        assert (await call(sidecar.url, "GET", "/v1/models", key.key)).status == 200

    result = await run_cli(sidecar.env, "keys", "revoke", revoked.key_id)
    assert result.code == 0, result.err

    async def refused() -> bool:
        reply = await call(sidecar.url, "GET", "/v1/models", revoked.key)
        return reply.status == 401 and "revoked" in reply.body["message"]

    await wait_for(refused, timeout=5)
    assert (await call(sidecar.url, "GET", "/v1/models", revoked.key)).headers[
        "WWW-Authenticate"].startswith("Bearer")

    result = await run_cli(sidecar.env, "keys", "rotate", rotated.key_id)
    assert result.code == 0, result.err
    new_key = result.last_line
    assert new_key.startswith(f"sk-sidecar-{rotated.key_id}-") and new_key != rotated.key

    async def old_refused() -> bool:
        return (await call(sidecar.url, "GET", "/v1/models", rotated.key)).status == 401

    await wait_for(old_refused, timeout=5)
    assert (await call(sidecar.url, "GET", "/v1/models", new_key)).status == 200
    # A revoked key cannot be rotated back to life; unknown ids fail cleanly.
    assert (await run_cli(sidecar.env, "keys", "rotate", revoked.key_id)).code == 1
    assert (await run_cli(sidecar.env, "keys", "revoke", "0000000000000000")).code == 1


async def test_expired_key_gets_401(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env))
    key = await create_key(sidecar.env, "alice", "user", "default", "--expires", "1s")
    assert (await call(sidecar.url, "GET", "/v1/models", key.key)).status == 200

    async def expired() -> bool:
        reply = await call(sidecar.url, "GET", "/v1/models", key.key)
        return reply.status == 401 and "expired" in reply.body["message"]

    await wait_for(expired, timeout=5, interval=0.1)
    _assert_401(await call(sidecar.url, "GET", "/v1/models", key.key), key.key)
    past = await run_cli(sidecar.env, "keys", "create", "--owner", "x", "--role", "user",
                         "--expires", "2001-01-01")
    assert past.code == 2 and "not in the future" in past.err


async def _stored_text(env: dict[str, str]) -> str:
    """Everything the database holds, as text (SQLite: the raw files too)."""
    if env.get("DB_HOST"):
        conninfo = (f"host={env['DB_HOST']} port={env['DB_PORT']} dbname={env['DB_NAME']} "
                    f"user={env['DB_USER']}")
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            cur = await conn.execute("SELECT * FROM auth_keys")
            return repr(await cur.fetchall())
    data = Path(env["SIDECAR_SERVER_DATA_DIR"])
    files = await asyncio.to_thread(lambda: [p.read_bytes() for p in data.glob("sidecar.db*")])
    return "".join(f.decode("latin-1") for f in files)


async def test_keys_cli_lists_without_secrets_and_stores_only_hashes(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env))
    env = sidecar.env
    admin = await create_key(env, "root", "admin", "acme", "--name", "ops laptop")
    user = await create_key(env, "alice", "user", "acme", "--expires", "2099-01-01")
    assert (await run_cli(env, "keys", "revoke", user.key_id)).code == 0

    text = await run_cli(env, "keys", "list")
    assert text.code == 0
    assert admin.key_id in text.out and user.key_id in text.out and "ops laptop" in text.out
    listed = json.loads((await run_cli(env, "keys", "list", "--format", "json")).out)
    by_id = {row["key_id"]: row for row in listed}
    assert by_id[admin.key_id] | {"owner": "root", "org": "acme", "role": "admin",
                                  "status": "active"} == by_id[admin.key_id]
    assert by_id[user.key_id]["status"] == "revoked"
    assert by_id[user.key_id]["expires_at"] == "2099-01-01T00:00:00Z"

    stored = await _stored_text(env)
    assert admin.key_id in stored
    for key in (admin, user):
        assert key.key not in text.out and key.key not in json.dumps(listed)
        secret = key.key.split("-", 3)[3]
        assert secret not in stored and key.key not in stored

    bad_role = await run_cli(env, "keys", "create", "--owner", "x", "--role", "superuser")
    assert bad_role.code == 2 and "unknown role" in bad_role.err


async def test_rotated_key_works_at_once_even_where_the_old_one_is_cached(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env))  # default cache TTL
    key = await create_key(sidecar.env, "alice", "user")
    assert (await call(sidecar.url, "GET", "/v1/models", key.key)).status == 200
    rotated = await run_cli(sidecar.env, "keys", "rotate", key.key_id)
    assert rotated.code == 0

    async def new_accepted() -> bool:
        return (await call(sidecar.url, "GET", "/v1/models", rotated.last_line)).status == 200

    # Well before the 2 s cache TTL: a mismatching cached hash is re-read (after 0.2 s).
    await wait_for(new_accepted, timeout=1.2, interval=0.05)

    async def old_refused() -> bool:
        return (await call(sidecar.url, "GET", "/v1/models", key.key)).status == 401

    await wait_for(old_refused, timeout=5, interval=0.1)
