"""Budgets without Redis: spend counted in the database. A hard cap holds exactly on one
replica (SQLite) and survives its restart; replicas sharing PostgreSQL see each other's
spend within two refresh rounds; with the database gone, open mode serves from memory and
closed mode answers 503."""

from __future__ import annotations

import json
from pathlib import Path

from toxiproxy import Toxiproxy

from tests.budgets.budgets_support import (
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
from tests.conftest import SidecarFactory, wait_for
from tests.support.toxiproxy_fixture import listen_address


async def test_a_hard_daily_cap_on_sqlite_holds_exactly_and_survives_a_restart(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    await after_midnight_margin()
    env = budget_env(tmp_path, {})
    sidecar = await start_sidecar(**env)
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--owner", "alice", "--period", "day",
                     "--limit", str(3 * HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)
    assert (await readiness(sidecar.url))[1]["backend"] == "database"
    statuses = [(await chat(sidecar.url, key.key, stream=i == 1)).status for i in range(4)]
    assert statuses == [200, 200, 200, 429]

    # Shutting down writes what was not written yet; a new process reads it back.
    await sidecar.server.close()
    again = await start_sidecar(**env)
    refused = await chat(again.url, key.key)
    assert (refused.status, refused.body["code"]) == (429, "budget_exceeded")
    listed = await run_cli(again.env, "budgets", "list", "--json")
    assert [(row["spent"], row["percent"]) for row in json.loads(listed.out)] == [
        (str(3 * HI_COST), 100.0)]


async def test_replicas_sharing_postgres_see_each_others_spend(
        start_sidecar: SidecarFactory, tmp_path: Path, pg_database: dict[str, str]) -> None:
    await after_midnight_margin()
    env = budget_env(tmp_path, pg_database)
    first = await start_sidecar(**env)
    second = await start_sidecar(**env)
    key = await create_key(first.env, "alice", "user", "acme")
    await set_budget(first.env, "--key", key.key_id, "--period", "month",
                     "--limit", str(2 * HI_COST), "--hard")
    for sidecar in (first, second):
        await budgets_in_force(sidecar.url, 1)
    assert (await chat(first.url, key.key)).status == 200
    assert (await chat(first.url, key.key)).status == 200
    # The replica that charged knows at once; the other within two rounds of 0.1 s.
    assert (await chat(first.url, key.key)).status == 429

    async def refused_on_second() -> bool:
        return (await chat(second.url, key.key)).status == 429

    await wait_for(refused_on_second, timeout=3, interval=0.05)


async def test_with_postgres_gone_open_mode_serves_from_memory_closed_mode_refuses(
        start_sidecar: SidecarFactory, tmp_path: Path, pg_database: dict[str, str],
        toxiproxy_server: Toxiproxy) -> None:
    await after_midnight_margin()
    proxy = toxiproxy_server.create(upstream="127.0.0.1:5432", name="postgres",
                                    listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    behind = {**pg_database, "DB_HOST": host, "DB_PORT": str(port)}
    common = {"SIDECAR_DB_TIMEOUT_SECONDS": "0.5", "SIDECAR_AUTH_DB_TIMEOUT_SECONDS": "0.5",
              "SIDECAR_BUDGETS_PROBE_INTERVAL_SECONDS": "0.1"}
    opened = await start_sidecar(**budget_env(tmp_path / "open", behind, **common))
    closed = await start_sidecar(**budget_env(tmp_path / "closed", behind, **common,
                                              SIDECAR_BUDGETS_FAILURE_MODE="closed"))
    key = await create_key(opened.env, "alice", "user", "acme")
    await set_budget(opened.env, "--key", key.key_id, "--period", "day",
                     "--limit", str(3 * HI_COST), "--hard")
    for sidecar in (opened, closed):
        await budgets_in_force(sidecar.url, 1)
        assert (await chat(sidecar.url, key.key)).status == 200

    async def knows_both() -> bool:
        # A free model's answer costs nothing and carries the budget's headers.
        answer = await post_chat(opened.url, key.key, model="free-model")
        return answer.headers["X-Sidecar-Budget-Remaining"] == str(HI_COST)

    await wait_for(knows_both, timeout=3, interval=0.05)

    with proxy.down():
        async def noticed() -> bool:
            return (await readiness(closed.url))[0] == 503

        await wait_for(noticed, timeout=5, interval=0.1)
        refused = await chat(closed.url, key.key)
        assert (refused.status, refused.body["code"]) == (503, "budget_unavailable")
        # Open mode: the spend known (6 of 9) plus what is charged meanwhile.
        assert [(await chat(opened.url, key.key)).status for _ in range(2)] == [200, 429]
        assert (await readiness(opened.url))[1]["backend"] == "fallback"

    async def served_again() -> bool:
        return (await chat(closed.url, key.key)).status != 503

    await wait_for(served_again, timeout=10, interval=0.2)
    # Every charge reached the database: both replicas' chats, the outage's included.
    async def everything_written() -> bool:
        listed = await run_cli(opened.env, "budgets", "list", "--json")
        rows = json.loads(listed.out)
        return bool(rows and rows[0]["spent"] == str(3 * HI_COST))

    await wait_for(everything_written, timeout=10, interval=0.2)
