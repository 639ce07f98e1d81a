"""Secrets hygiene: no key, the upstream key included, in logs, CLI output or error bodies."""

from __future__ import annotations

import logging

import pytest
from auth_support import auth_env, call, create_key, run_cli, start_conversation

from tests.conftest import MOCK_KEY, SidecarFactory


@pytest.mark.parametrize("plugins", ["store,auth", "logs,store,auth"])
async def test_no_key_is_ever_logged_or_echoed(
    plugins: str, start_sidecar: SidecarFactory, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar = await start_sidecar(**auth_env({}, SIDECAR_PLUGINS_CHAIN=plugins,
                                             SIDECAR_AUTH_CACHE_TTL_SECONDS="0"))
    url, env = sidecar.url, sidecar.env
    user = await create_key(env, "alice", "user")
    other = await create_key(env, "bob", "user")
    doomed = await create_key(env, "carol", "read_only", "default", "--expires", "30d")
    secrets = [MOCK_KEY, user.key, other.key, doomed.key,
               *(k.key.split("-", 3)[3] for k in (user, other, doomed))]

    outputs: list[str] = []
    conversation = await start_conversation(url, user.key)
    replies = [
        await call(url, "GET", "/v1/models", user.key),
        await call(url, "GET", f"/v1/conversations/{conversation}", other.key),  # 404
        await call(url, "POST", "/v1/agents", user.key, json={"name": "x"}),  # 403
        await call(url, "GET", "/v1/models", user.key[:-1] + "x"),  # wrong secret
        await call(url, "GET", "/v1/models", MOCK_KEY),  # the upstream key itself
        await call(url, "GET", "/v1/models", headers={"Authorization": user.key}),  # no scheme
    ]
    for args in (("keys", "list"), ("keys", "list", "--format", "json"),
                 ("keys", "revoke", doomed.key_id)):
        result = await run_cli(env, *args)
        outputs += [result.out, result.err]
    replies.append(await call(url, "GET", "/v1/models", doomed.key))  # revoked
    replies.append(await call(url, "GET", "/readyz"))
    assert [r.status for r in replies] == [200, 404, 403, 401, 401, 401, 401, 200]

    printed = capsys.readouterr()
    if plugins.startswith("logs"):
        assert "mistral_sidecar.access" in printed.out + caplog.text
    texts = [caplog.text, printed.out, printed.err, *outputs, *(r.text for r in replies),
             *(str(dict(r.headers)) for r in replies)]
    for secret in secrets:
        for text in texts:
            assert secret not in text
