"""Callers the admin API must turn away, always in Mistral's error shape: no key or a bad one
(401), a key whose role is not an admin's (403, on every route), unknown paths (404), wrong
methods (405), broken or unexpected bodies and parameters (400), ids that try to climb out
of their path segment (404), and a sidecar whose callers bring their own Mistral keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from admin_support import admin_env, assert_error, audit_lines, call, create_key

from plugins.admin import ROUTES
from tests.conftest import SidecarFactory

#: A plausible value for every path parameter.
_SAMPLE = {"key_id": "0123456789abcdef", "agent_id": "ag_0123", "conversation_id": "conv_0123"}


def _paths() -> list[tuple[str, str]]:
    return [(route.method, route.path.format(**_SAMPLE)) for route in ROUTES]


async def test_only_admin_keys_get_in(start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env({}, log))
    url = sidecar.url
    user = await create_key(sidecar.env, "alice", "user", "acme")
    reader = await create_key(sidecar.env, "rita", "read_only", "acme")
    bogus = "sk-sidecar-0123456789abcdef-" + "A" * 43
    assert len(_paths()) == len(ROUTES) >= 15
    for method, path in _paths():
        body = {"owner": "mallory", "role": "admin"} if method == "POST" else None
        for key in (user.key, reader.key):
            reply = await call(url, method, path, key, json=body)
            assert_error(reply, 403, "forbidden")
            assert reply.body["type"] == "permission_error"
        for key in (None, bogus, "not-a-sidecar-key"):
            reply = await call(url, method, path, key, json=body)
            assert_error(reply, 401)
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert bogus not in (await call(url, method, path, bogus)).text
    listed = await call(url, "GET", "/admin/v1/keys",
                        headers={"Authorization": f"Basic {user.key}"})
    assert_error(listed, 401)
    assert audit_lines(log) == []


async def test_unknown_routes_methods_bodies_and_parameters(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env({}, log))
    url = sidecar.url
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    key = admin.key

    for path in ("/admin/v1", "/admin/v1/", "/admin/v1/nope", "/admin/v1/keys/abc/def/ghi",
                 "/admin/v2/keys", "/admin/v1/keys/0123456789abcdef/delete"):
        assert_error(await call(url, "GET", path, key), 404)
    wrong = await call(url, "DELETE", "/admin/v1/keys", key)
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET, POST"
    assert_error(await call(url, "PUT", f"/admin/v1/keys/{admin.key_id}", key), 405)
    assert_error(await call(url, "GET", f"/admin/v1/keys/{admin.key_id}/revoke", key), 405)
    assert_error(await call(url, "POST", "/admin/v1/state", key), 405)

    async def post(body: bytes, content_type: str = "application/json"
                   ) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.post(
                url + "/admin/v1/keys", data=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    assert await post(b'{"owner": "x", "role": ') == (400, {
        "object": "error", "message": "The request body is not valid JSON.",
        "type": "invalid_request_error", "code": "invalid_json"})
    for body, code in ((b'["owner"]', "invalid_json"), (b"\xff\xfe", "invalid_json"),
                       (b'{"owner": "x", "role": "user", "admin": true}', "unknown_field"),
                       (b'{"role": "user"}', "missing_field"),
                       (b'{"owner": 7, "role": "user"}', "invalid_request"),
                       (b'{"owner": true, "role": "user"}', "invalid_request")):
        status, error = await post(body)
        assert (status, error["code"]) == (400, code), (body, error)
    assert (await post(b'{"owner": "x", "role": "user"}', "text/plain"))[0] == 415
    assert (await post(b'{"owner": "' + b"x" * 70_000 + b'", "role": "user"}'))[0] == 413
    revoke_with_body = await call(url, "POST", f"/admin/v1/keys/{admin.key_id}/revoke", key,
                                  json={"force": True})
    assert_error(revoke_with_body, 400, "unknown_field")

    for params in ({"by": "owner,colour"}, {"from": "yesterday"}, {"to": "2025-13-01"},
                   {"from": "2025-02-01", "to": "2025-01-01"}, {"org": "globex"}):
        assert_error(await call(url, "GET", "/admin/v1/usage", key, params=params), 400)
    assert_error(await call(url, "GET", "/admin/v1/conversations", key,
                            params={"since": "last week"}), 400)
    assert_error(await call(url, "GET", "/admin/v1/keys?limit=1&limit=2", key), 400)
    # Nothing above changed anything; the admin's own key still works.
    assert audit_lines(log) == []
    assert (await call(url, "GET", "/v1/models", key)).status == 200


async def test_ids_cannot_climb_out_of_their_segment(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    sidecar = await start_sidecar(**admin_env({}, tmp_path / "sidecar.log"))
    url = sidecar.url
    admin = await create_key(sidecar.env, "root", "admin", "default")
    for path in ("/admin/v1/keys/..%2F..%2Fadmin%2Fv1%2Fkeys", "/admin/v1/keys/%2e%2e",
                 f"/admin/v1/keys/{admin.key_id}%2Frotate", f"/admin/v1/keys/{admin.key_id}%00",
                 "/admin/v1/keys/..", "/admin/v1/conversations/..%2F..%2Fkeys",
                 "/admin/v1/conversations/conv%2F..%2F..", "/admin/v1/conversations/%2e%2e",
                 "/admin/v1/conversations/a%0Ab", "/admin/v1/conversations/conv_1%0A",
                 f"/admin/v1/keys/{admin.key_id}%0A"):
        assert_error(await call(url, "GET", path, admin.key), 404)
    for path in (f"/admin/v1/keys/..%2F{admin.key_id}/rotate",
                 "/admin/v1/agents/..%2Fkeys/adopt",
                 "/admin/v1/conversations/..%2F..%2Fx/adopt"):
        assert_error(await call(url, "POST", path, admin.key), 404)
    # The key those paths tried to reach is untouched.
    assert (await call(url, "GET", "/v1/models", admin.key)).status == 200


async def test_no_admin_api_when_callers_bring_their_own_keys(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    sidecar = await start_sidecar(**admin_env({}, tmp_path / "sidecar.log",
                                              SIDECAR_AUTH_MODE="passthrough",
                                              SIDECAR_AUTH_PASSTHROUGH_ROLE="admin"))
    assert_error(await call(sidecar.url, "GET", "/admin/v1/keys", "any-mistral-key"), 404)
