"""Requests outside the spec are denied to every role, admin's ``*`` included, unless
``auth.unmapped_roles`` names the role; ``HEAD`` is authorised exactly as ``GET`` and never
shows more than ``GET`` would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tenancy_support import is_not_found, make_org_a, make_outsiders, mock_seq, raw_call

from proxy.loader import load
from proxy.settings import ConfigError
from tests.auth.auth_support import auth_env, create_key, is_mistral_error
from tests.conftest import MOCK_KEY, MockUpstream, SidecarFactory

_OUTSIDE = ["/v1/not-in-the-spec", "/v1/conversations/abc/secret-export"]


async def test_requests_outside_the_spec_are_denied_even_to_admins(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env({}))
    admin = await create_key(sidecar.env, "root", "admin")
    before = await mock_seq(mock_upstream)
    for path in _OUTSIDE:
        for method in ("GET", "POST", "DELETE"):
            reply = await raw_call(sidecar.url, method, path, admin.key, b"{}")
            assert reply.status == 403, (method, path, reply.body)
            assert is_mistral_error(reply.json) and reply.json["type"] == "permission_error"
    assert await mock_seq(mock_upstream) == before


async def test_unmapped_roles_let_named_roles_through(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env({}, SIDECAR_AUTH_UNMAPPED_ROLES="admin"))
    admin = await create_key(sidecar.env, "root", "admin")
    user = await create_key(sidecar.env, "alice", "user")
    reply = await raw_call(sidecar.url, "GET", _OUTSIDE[0], admin.key)
    assert reply.status != 403
    requests = await mock_upstream.requests()
    assert requests[-1]["path"] == _OUTSIDE[0]
    before = requests[-1]["seq"]
    assert (await raw_call(sidecar.url, "GET", _OUTSIDE[0], user.key)).status == 403
    assert await mock_seq(mock_upstream) == before


def test_unmapped_access_is_configured_in_one_place(tmp_path: Path) -> None:
    env = {"MISTRAL_API_KEY": MOCK_KEY, "SIDECAR_PLUGINS_CHAIN": "store,auth",
           "SIDECAR_SERVER_DATA_DIR": str(tmp_path)}
    config = tmp_path / "roles.yaml"
    config.write_text("auth:\n  roles:\n    admin: ['*']\n    user: [use_model, unmapped]\n")
    with pytest.raises(ConfigError) as caught:
        load(config, env)
    assert any("auth.unmapped_roles" in p for p in caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        load(None, {**env, "SIDECAR_AUTH_UNMAPPED_ROLES": "admin,ghost"})
    assert any("ghost" in p and "auth.unmapped_roles" in p for p in caught.value.problems)
    load(None, {**env, "SIDECAR_AUTH_UNMAPPED_ROLES": "admin"})


async def test_head_is_get_without_the_body(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env({}))
    url = sidecar.url
    a = await make_org_a(url, sidecar.env)
    outsiders = await make_outsiders(sidecar.env)

    own = f"/v1/conversations/{a.conversation}"
    head = await raw_call(url, "HEAD", own, a.user.key)
    assert head.status == 200 and head.body == b""
    for key in (outsiders.admin, outsiders.user, outsiders.read_only):
        for path in (own, f"/v1/files/{a.file}/content", f"/v1/agents/{a.agent}"):
            get = await raw_call(url, "GET", path, key.key)
            assert is_not_found(get)
            assert (await raw_call(url, "HEAD", path, key.key)).status == 404

    # HEAD on a path that has no GET is a request outside the spec, for everyone.
    before = await mock_seq(mock_upstream)
    for path in (f"{own}/restart", "/v1/batch/jobs/x/cancel", "/v1/chat/completions"):
        reply = await raw_call(url, "HEAD", path, a.admin.key)
        assert reply.status == 403, (path, reply.status)
    assert await mock_seq(mock_upstream) == before

    # A list answers HEAD with the headers of the caller's filtered GET, not upstream's.
    for key in (a.admin, outsiders.admin):
        for path in ("/v1/conversations", "/v1/files", "/v1/agents", "/v1/batch/jobs"):
            get = await raw_call(url, "GET", path, key.key)
            head = await raw_call(url, "HEAD", path, key.key)
            assert get.status == head.status == 200, (path, head.status)
            assert head.body == b""
            assert head.headers["content-length"] == str(len(get.body)), path
    requests = await mock_upstream.requests()
    assert all(r["method"] == "GET" for r in requests if r["seq"] > before)
