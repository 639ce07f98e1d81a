"""The admin API's keys: an org admin manages its organisation's keys and no other's, a
secret is shown once and never again (nor logged), a revoked or rotated-out key stops working
on this replica at once, and every change leaves exactly one audit line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from admin_support import admin_env, assert_error, audit_lines, call, create_key

from tests.conftest import SidecarFactory, wait_for

KEYS = "/admin/v1/keys"


async def _works(url: str, key: str) -> int:
    return (await call(url, "GET", "/v1/models", key)).status


async def test_an_org_admin_manages_only_its_orgs_keys(
    start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env(store_env, log))
    url, env = sidecar.url, sidecar.env
    acme = await create_key(env, "root", "admin", "acme")
    alice = await create_key(env, "alice", "user", "acme")
    globex = await create_key(env, "gail", "admin", "globex")
    gus = await create_key(env, "gus", "user", "globex")

    made = await call(url, "POST", KEYS, acme.key,
                      json={"owner": "bob", "role": "user", "name": "bob's laptop",
                            "expires": "2099-01-01"})
    assert made.status == 201, made.text
    bob = made.body
    assert bob | {"object": "key", "owner": "bob", "role": "user", "org": "acme",
                  "name": "bob's laptop", "status": "active",
                  "expires_at": "2099-01-01T00:00:00Z"} == bob
    assert bob["secret"].startswith(f"sk-sidecar-{bob['id']}-")
    assert made.headers["Cache-Control"] == "no-store"
    assert await _works(url, bob["secret"]) == 200

    listed = await call(url, "GET", KEYS, acme.key)
    assert listed.status == 200, listed.text
    assert {item["id"] for item in listed.body["data"]} == {acme.key_id, alice.key_id,
                                                            bob["id"]}
    assert {item["org"] for item in listed.body["data"]} == {"acme"}
    for item in listed.body["data"]:
        assert {"id", "owner", "role", "org"} <= set(item) and "secret" not in item
    one = await call(url, "GET", f"{KEYS}/{bob['id']}", acme.key)
    assert one.status == 200 and "secret" not in one.body
    for secret in (acme.key, alice.key, bob["secret"]):
        assert secret not in listed.text and secret not in one.text
    only_bob = await call(url, "GET", KEYS, acme.key, params={"owner": "bob"})
    assert [item["id"] for item in only_bob.body["data"]] == [bob["id"]]
    theirs = await call(url, "GET", KEYS, globex.key)
    assert {item["id"] for item in theirs.body["data"]} == {globex.key_id, gus.key_id}

    # Another organisation's key is not there at all, whatever the admin tries.
    for method, path in (("GET", f"{KEYS}/{gus.key_id}"),
                         ("POST", f"{KEYS}/{gus.key_id}/revoke"),
                         ("POST", f"{KEYS}/{gus.key_id}/rotate"),
                         ("POST", f"{KEYS}/{globex.key_id}/revoke")):
        assert_error(await call(url, method, path, acme.key), 404, "not_found")
    assert await _works(url, gus.key) == 200 and await _works(url, globex.key) == 200
    assert_error(await call(url, "POST", KEYS, acme.key,
                            json={"owner": "x", "role": "user", "org": "globex"}), 403)
    assert_error(await call(url, "POST", KEYS, acme.key,
                            json={"owner": "x", "role": "superuser"}), 400)
    assert_error(await call(url, "POST", KEYS, acme.key,
                            json={"owner": "x", "role": "user", "expires": "2001-01-01"}), 400)
    assert_error(await call(url, "POST", KEYS, acme.key,
                            json={"owner": "x\nforged line", "role": "user"}), 400)
    assert_error(await call(url, "POST", KEYS, acme.key, json={"owner": " ", "role": "user"}),
                 400)

    # Rotation: the new secret works and the old one stops at once (the key table is
    # re-read only every minute here).
    rotated = await call(url, "POST", f"{KEYS}/{bob['id']}/rotate", acme.key)
    assert rotated.status == 200, rotated.text
    assert rotated.body["id"] == bob["id"] and rotated.body["rotated_at"]
    assert rotated.body["secret"] != bob["secret"]
    assert await _works(url, bob["secret"]) == 401
    assert await _works(url, rotated.body["secret"]) == 200

    # Revocation: at once, for good, and idempotent.
    assert await _works(url, alice.key) == 200
    revoked = await call(url, "POST", f"{KEYS}/{alice.key_id}/revoke", acme.key)
    assert revoked.status == 200 and revoked.body["status"] == "revoked", revoked.text
    assert_error(await call(url, "GET", "/v1/models", alice.key), 401)
    again = await call(url, "POST", f"{KEYS}/{alice.key_id}/revoke", acme.key)
    assert again.status == 200 and again.body["revoked_at"] == revoked.body["revoked_at"]
    assert_error(await call(url, "POST", f"{KEYS}/{alice.key_id}/rotate", acme.key), 409,
                 "key_revoked")

    changes = [("key.create", bob["id"]), ("key.rotate", bob["id"]),
               ("key.revoke", alice.key_id)]
    lines = await wait_for(lambda: (found := audit_lines(log)) and len(found) >= 3 and found)
    assert [(line["action"], line["target"]) for line in lines] == changes
    for line in lines:
        assert line | {"actor_key_id": acme.key_id, "actor_owner": "root", "org": "acme",
                       "level": "INFO"} == line
        assert line["at"].endswith("Z")
    text = log.read_text()
    for secret in (acme.key, alice.key, bob["secret"], rotated.body["secret"]):
        # sk-sidecar-<id>-<random part>; the random part may itself hold a "-".
        assert secret not in text and secret.split("-", 3)[3] not in text


async def test_a_revoked_admin_key_loses_the_admin_api_at_once(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    sidecar = await start_sidecar(**admin_env({}, tmp_path / "sidecar.log"))
    url = sidecar.url
    first = await create_key(sidecar.env, "root", "admin", "acme")
    made = await call(url, "POST", KEYS, first.key, json={"owner": "deputy", "role": "admin"})
    deputy: dict[str, Any] = made.body
    assert made.status == 201 and deputy["role"] == "admin", made.text
    assert (await call(url, "GET", KEYS, deputy["secret"])).status == 200
    assert (await call(url, "POST", f"{KEYS}/{first.key_id}/revoke", deputy["secret"])
            ).status == 200
    assert_error(await call(url, "GET", KEYS, first.key), 401)
    assert (await call(url, "GET", "/admin/v1/me", deputy["secret"])).body["key_id"] == \
        deputy["id"]


async def test_pages_of_keys(start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    sidecar = await start_sidecar(**admin_env({}, tmp_path / "sidecar.log"))
    url = sidecar.url
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    for n in range(4):
        assert (await call(url, "POST", KEYS, admin.key,
                           json={"owner": f"u{n}", "role": "read_only"})).status == 201
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        reply = await call(url, "GET", KEYS, admin.key, params=params)
        assert reply.status == 200, reply.text
        seen += [item["id"] for item in reply.body["data"]]
        if not reply.body["has_more"]:
            assert reply.body["next_after"] is None
            break
        after = reply.body["next_after"]
    assert len(seen) == 5 and seen == sorted(seen) and len(set(seen)) == 5
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"sort": "id"}):
        assert_error(await call(url, "GET", KEYS, admin.key, params=bad), 400)


async def test_audit_lines_are_written_whatever_the_log_level(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env({}, log, LOG_LEVEL="WARNING"))
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    made = await call(sidecar.url, "POST", KEYS, admin.key, json={"owner": "bob", "role": "user"})
    assert made.status == 201, made.text
    (line,) = await wait_for(lambda: audit_lines(log))
    assert (line["action"], line["target"], line["detail"]) == \
        ("key.create", made.body["id"], {"owner": "bob", "role": "user"})
