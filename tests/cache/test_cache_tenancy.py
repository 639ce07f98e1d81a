"""The cache is per organisation and sits behind authorisation."""

from __future__ import annotations

import pytest
from cache_support import CHAT, Key, chat, create_key, start_cached, upstream_calls

from proxy.loader import load
from proxy.settings import ConfigError
from tests.conftest import MOCK_KEY, MockUpstream, SidecarFactory


async def test_a_repeat_in_the_same_organisation_is_a_hit_and_never_crosses_organisations(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    bob = await create_key(sidecar.env, "bob", "user", "acme")
    eve = await create_key(sidecar.env, "eve", "admin", "globex")

    first = await chat(sidecar, alice)
    assert first.status == 200, first.text
    assert first.headers["X-Sidecar-Cache"] == "miss"
    second = await chat(sidecar, alice)
    assert second.status == 200
    assert second.headers["X-Sidecar-Cache"] == "hit"
    assert second.text == first.text
    assert second.headers["Content-Type"].startswith("application/json")
    assert int(second.headers["Age"]) >= 0
    assert await upstream_calls(mock_upstream) == 1

    # Another key of the same organisation shares the answer.
    colleague = await chat(sidecar, bob)
    assert colleague.headers["X-Sidecar-Cache"] == "hit" and colleague.text == first.text
    assert await upstream_calls(mock_upstream) == 1

    # Another organisation never sees it, even asking the very same thing.
    outsider = await chat(sidecar, eve)
    assert outsider.status == 200 and outsider.headers["X-Sidecar-Cache"] == "miss"
    assert outsider.body["id"] != first.body["id"]
    assert await upstream_calls(mock_upstream) == 2
    # ... and then has its own entry.
    assert (await chat(sidecar, eve)).body["id"] == outsider.body["id"]
    assert await upstream_calls(mock_upstream) == 2

    # A different question is a different entry.
    other = await chat(sidecar, alice, {**CHAT, "messages": [{"role": "user",
                                                               "content": "and a queue"}]})
    assert other.headers["X-Sidecar-Cache"] == "miss"
    assert await upstream_calls(mock_upstream) == 3


async def test_a_caller_whose_role_may_not_call_the_operation_is_refused_before_the_cache(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    reader = await create_key(sidecar.env, "rita", "read_only", "acme")
    assert (await chat(sidecar, alice)).status == 200
    assert (await chat(sidecar, alice)).headers["X-Sidecar-Cache"] == "hit"

    refused = await chat(sidecar, reader)
    assert refused.status == 403, refused.text
    assert "X-Sidecar-Cache" not in refused.headers
    assert "Echo" not in refused.text
    # Unauthenticated callers get nothing either.
    anonymous = await chat(sidecar, Key("x", "sk-sidecar-bogus-key", "x", "user", "acme"))
    assert anonymous.status == 401
    assert await upstream_calls(mock_upstream) == 1


async def test_passthrough_callers_share_answers_only_with_callers_of_the_same_mistral_key(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    # Every passthrough caller in one organisation: the sidecar cannot vouch for their keys,
    # so a bogus key must not read what a valid one stored.
    sidecar = await start_cached(start_sidecar, SIDECAR_AUTH_MODE="passthrough",
                                 SIDECAR_AUTH_PASSTHROUGH_ORG="shared")
    valid = Key("v", MOCK_KEY, "v", "user", "shared")
    bogus = Key("b", "not-a-mistral-key", "b", "user", "shared")
    first = await chat(sidecar, valid)
    assert first.status == 200, first.text
    assert (await chat(sidecar, valid)).headers["X-Sidecar-Cache"] == "hit"
    refused = await chat(sidecar, bogus)
    assert refused.status == 401 and "Echo" not in refused.text
    assert await upstream_calls(mock_upstream) == 2


def test_a_chain_with_the_cache_before_auth_does_not_start() -> None:
    for chain, why in (("store,cache", "it is not in the chain"),
                       ("store,cache,auth", "it comes after")):
        with pytest.raises(ConfigError) as caught:
            load(None, {"MISTRAL_API_KEY": "k", "SIDECAR_PLUGINS_CHAIN": chain})
        assert caught.value.problems == [
            f"plugins.chain (SIDECAR_PLUGINS_CHAIN): cache needs the auth plugin before it ({why})"]
