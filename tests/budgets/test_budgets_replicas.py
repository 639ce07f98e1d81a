"""Three sidecar processes sharing Redis (and one PostgreSQL for keys and budgets) enforce
one hard daily budget between them, exactly at the cap, streams included; nothing goes
upstream after it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.budgets.budgets_support import (
    HI_COST,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    chat,
    create_key,
    readiness,
    run_cli,
    seconds_to_midnight,
    set_budget,
)
from tests.conftest import MockProcess, SidecarProcess


async def upstream_requests(mock: MockProcess) -> list[dict[str, Any]]:
    """The chat completions the mock upstream received."""
    async with aiohttp.ClientSession() as http, \
            http.get(mock.url + "/__mock__/requests") as response:
        data = await response.json()
    received = data["requests"] if isinstance(data, dict) else data
    return [r for r in received if r["path"].endswith("/chat/completions")]


async def test_a_hard_daily_budget_stops_the_next_request_on_every_replica_at_the_cap(
        spawn_sidecar: Callable[..., SidecarProcess], spawn_mock: Callable[..., MockProcess],
        redis_env: dict[str, str], pg_database: dict[str, str], tmp_path: Path) -> None:
    await after_midnight_margin()
    mock = spawn_mock()
    # Three replicas, the mock, Redis and PostgreSQL share two cores: give Redis the time a
    # starved event loop may need (its timeout is tested with Toxiproxy elsewhere).
    env = budget_env(tmp_path, pg_database, **redis_env, MISTRAL_BASE_URL=mock.url,
                     SIDECAR_REDIS_TIMEOUT_MS="2000")
    assert (await run_cli(env, "migrate")).code == 0
    alice = await create_key(env, "alice", "user", "acme")
    bob = await create_key(env, "bob", "user", "acme")
    # Five chats of 3 USD each reach it exactly.
    await set_budget(env, "--key", alice.key_id, "--period", "day",
                     "--limit", str(5 * HI_COST), "--hard")
    replicas = [spawn_sidecar(**env) for _ in range(3)]
    for replica in replicas:
        await budgets_in_force(replica.url, 1)
        assert (await readiness(replica.url))[1]["backend"] == "redis"

    for i in range(5):
        answer = await chat(replicas[i % 3].url, alice.key, stream=i % 2 == 1)
        assert answer.status == 200, answer.body
    sent = len(await upstream_requests(mock))
    assert sent == 5

    for replica in replicas:
        for stream in (False, True):
            refused = await chat(replica.url, alice.key, stream=stream)
            assert refused.status == 429
            assert (refused.body["object"], refused.body["type"], refused.body["code"]) == (
                "error", "rate_limit_error", "budget_exceeded")
            assert "daily budget of 15 USD" in refused.body["message"]
            assert abs(int(refused.headers["retry-after"]) - seconds_to_midnight()) <= 5
            assert refused.headers["x-sidecar-budget-remaining"] == "0"
    # Upstream saw nothing after the cap was reached.
    assert len(await upstream_requests(mock)) == sent
    # Another key of the same owner's organisation has no budget: served on every replica.
    for replica in replicas:
        assert (await chat(replica.url, bob.key)).status == 200

    listed = await run_cli(env, "budgets", "list", "--json")
    assert listed.code == 0, listed.err
    [row] = json.loads(listed.out)
    assert (row["subject"], row["spent"], row["limit"], row["percent"], row["mode"]) == (
        alice.key_id, "15", "15", 100.0, "hard")
