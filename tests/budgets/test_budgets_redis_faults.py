"""Redis failing under a sidecar with budgets, through Toxiproxy: in open mode a cap already
reached stays reached from memory, others are served, the charges made meanwhile reach Redis
once it is back; in closed mode requests a budget applies to get 503; a sidecar whose Redis
is gone at start-up serves in open mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from toxiproxy import Proxy, Toxiproxy

from tests.budgets.budgets_support import (
    CHAIN,
    HI_COST,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    chat,
    create_key,
    post_chat,
    readiness,
    run_cli,
    set_budget,
)
from tests.conftest import REDIS_HOST, REDIS_PORT, Sidecar, SidecarFactory, free_port, wait_for
from tests.support.event_recorder import events
from tests.support.toxiproxy_fixture import listen_address

RECORDER = "tests.support.event_recorder"


@pytest.fixture
def redis_proxy(toxiproxy_server: Toxiproxy) -> Proxy:
    """A Toxiproxy proxy in front of the test Redis."""
    return toxiproxy_server.create(upstream=f"{REDIS_HOST}:{REDIS_PORT}", name="redis",
                                   listen="127.0.0.1:0")


async def behind(start_sidecar: SidecarFactory, tmp_path: Path, proxy: Proxy, prefix: str,
                 **env: str) -> Sidecar:
    await after_midnight_margin()
    host, port = listen_address(proxy)
    return await start_sidecar(**budget_env(
        tmp_path, {}, SIDECAR_PLUGINS_CHAIN=f"{CHAIN},{RECORDER}", REDIS_HOST=host,
        REDIS_PORT=str(port), SIDECAR_REDIS_PREFIX=prefix,
        SIDECAR_BUDGETS_PROBE_INTERVAL_SECONDS="0.1", **env))


async def test_redis_down_in_open_mode_keeps_a_reached_cap_and_sends_charges_when_back(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_proxy: Proxy,
        redis_prefix: str) -> None:
    sidecar = await behind(start_sidecar, tmp_path, redis_proxy, redis_prefix)
    capped = await create_key(sidecar.env, "alice", "user", "acme")
    other = await create_key(sidecar.env, "bob", "user", "acme")
    await set_budget(sidecar.env, "--key", capped.key_id, "--period", "day",
                     "--limit", str(HI_COST), "--hard")
    await set_budget(sidecar.env, "--key", other.key_id, "--period", "day",
                     "--limit", "100", "--soft")
    await budgets_in_force(sidecar.url, 2)
    assert (await chat(sidecar.url, capped.key)).status == 200
    assert (await chat(sidecar.url, other.key)).status == 200

    redis_proxy.disable()
    # Reached before the outage: still refused, from what this replica knows.
    assert (await chat(sidecar.url, capped.key)).status == 429
    for _ in range(2):
        answer = await post_chat(sidecar.url, other.key)
        assert answer.status == 200
    # Its charges are counted here meanwhile: 3 chats of 3 USD.
    assert (await post_chat(sidecar.url, other.key)).headers[
        "X-Sidecar-Budget-Remaining"] == str(100 - 3 * HI_COST)
    assert events(sidecar.app, "budgets.fallback") == [
        {"active": True, "reason": "unreachable", "failure_mode": "open"}]
    status, check = await readiness(sidecar.url)
    assert (status, check["ok"], check["backend"]) == (200, True, "fallback")

    redis_proxy.enable()
    chats = 4

    async def recovered() -> bool:
        nonlocal chats
        assert (await post_chat(sidecar.url, other.key)).status == 200
        chats += 1
        return any(not e["active"] for e in events(sidecar.app, "budgets.fallback"))

    await wait_for(recovered, timeout=5, interval=0.1)

    async def spent_in_redis() -> str | None:
        listed = await run_cli(sidecar.env, "budgets", "list", "--json")
        rows = {row["subject"]: row for row in json.loads(listed.out)}
        return str(rows[other.key_id]["spent"])

    # Every chat of bob's is charged in Redis, once: those made during the outage too.
    await wait_for(lambda: _equals(spent_in_redis(), str(chats * HI_COST)), timeout=5,
                   interval=0.2)
    assert (await readiness(sidecar.url))[1]["backend"] == "redis"


async def _equals(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def test_redis_down_in_closed_mode_answers_503_to_budgeted_requests_only(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_proxy: Proxy,
        redis_prefix: str) -> None:
    sidecar = await behind(start_sidecar, tmp_path, redis_proxy, redis_prefix,
                           SIDECAR_BUDGETS_FAILURE_MODE="closed")
    budgeted = await create_key(sidecar.env, "alice", "user", "acme")
    free = await create_key(sidecar.env, "bob", "user", "beta")
    await set_budget(sidecar.env, "--org", "acme", "--period", "month", "--limit", "100",
                     "--hard")
    await budgets_in_force(sidecar.url, 1)
    assert (await chat(sidecar.url, budgeted.key)).status == 200

    redis_proxy.disable()
    refused = await chat(sidecar.url, budgeted.key)
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.body == {"object": "error", "type": "service_unavailable",
                            "code": "budget_unavailable",
                            "message": "Budgets are temporarily unavailable; retry shortly."}
    # No budget applies to bob: Redis is not needed to serve him.
    assert (await chat(sidecar.url, free.key)).status == 200
    status, check = await readiness(sidecar.url)
    assert (status, check["ok"], check["failure_mode"]) == (503, False, "closed")

    redis_proxy.enable()

    async def served() -> bool:
        return (await chat(sidecar.url, budgeted.key)).status == 200

    await wait_for(served, timeout=5, interval=0.1)
    assert (await readiness(sidecar.url))[0] == 200


async def test_a_sidecar_whose_redis_is_gone_at_start_serves_in_open_mode(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    await after_midnight_margin()
    sidecar = await start_sidecar(**budget_env(
        tmp_path, {}, SIDECAR_PLUGINS_CHAIN=f"{CHAIN},{RECORDER}", REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(free_port())))
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--key", key.key_id, "--period", "day",
                     "--limit", str(2 * HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)
    # The cap still holds, counted in this process.
    statuses = [(await chat(sidecar.url, key.key)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, check = await readiness(sidecar.url)
    assert (status, check["backend"], check["spend"]["ok"]) == (200, "fallback", False)
    assert check["held_charges"] == 1
