"""A hard budget stays hard under concurrency: requests in flight hold what they may cost, so
40 chats sent at once against a 15 USD cap do not all go upstream, on one replica, on three
sharing Redis, and with the database as the spend backend. A reservation nobody settles (its
replica was killed) stops counting after the window; a request refused by a plugin after
budgets gives its reservation back; a soft budget holds nothing and refuses nothing."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import redis.asyncio as redis

from plugins.budgets import BUDGETS
from plugins.budgets.db_spend import DatabaseSpend
from plugins.budgets.holds import minute
from plugins.budgets.periods import utc_now as utcnow
from tests.auth.auth_support import Reply, call
from tests.budgets.budgets_support import (
    CHAIN,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    create_key,
    run_cli,
    set_budget,
)
from tests.budgets.refuse_after_budgets import HEADER as REFUSE_HEADER
from tests.conftest import (
    REDIS_HOST,
    REDIS_PORT,
    MockProcess,
    MockUpstream,
    Sidecar,
    SidecarFactory,
    SidecarProcess,
    wait_for,
)

#: Cheap prompts, dear answers: a chat of "hi" (1 prompt token, 2 completion tokens) costs
#: 2.001 USD; its reservation (about 27 prompt tokens estimated from the body, 2 output
#: tokens) about 2.03 USD, so a reservation is close to what a request really costs.
PRICES = """\
currency: USD
replace: true
models:
  meter-a: {input: 1000, output: 1000000}
"""
COST = Decimal("2.001")
LIMIT = Decimal(15)
#: Reservations of ~2.03 USD: seven in flight hold 14.2 USD, so an eighth is still admitted
#: (spend + what the others hold < 15) and a ninth is not.
FIT = 8
CONCURRENT = 40
BODY = {"model": "meter-a", "stream": False, "messages": [{"role": "user", "content": "hi"}]}


def concurrency_env(tmp_path: Path, store: dict[str, str], **extra: str) -> dict[str, str]:
    """The budgets environment with :data:`PRICES` and two output tokens reserved."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    prices = tmp_path / "dear-output.yaml"
    prices.write_text(PRICES)
    return budget_env(tmp_path, store, SIDECAR_PRICES_FILE=str(prices),
                      SIDECAR_BUDGETS_RESERVE_OUTPUT_TOKENS="2", **extra)


async def chat_at_once(urls: list[str], key: str, count: int = CONCURRENT,
                       headers: dict[str, str] | None = None) -> list[Reply]:
    """``count`` chats sent together, spread over ``urls``."""
    return list(await asyncio.gather(*(
        call(urls[i % len(urls)], "POST", "/v1/chat/completions", key, json=BODY,
             headers=headers) for i in range(count))))


async def upstream_chats(url: str) -> int:
    """Chat completions a mock upstream received."""
    async with aiohttp.ClientSession() as http, \
            http.get(url + "/__mock__/requests") as response:
        data = await response.json()
    received = data["requests"] if isinstance(data, dict) else data
    return sum(1 for r in received if r["path"].endswith("/chat/completions"))


async def spent(env: dict[str, str]) -> Decimal:
    """The one budget's spend this period, as ``budgets list`` shows it."""
    listed = await run_cli(env, "budgets", "list", "--json")
    assert listed.code == 0, listed.err
    [row] = json.loads(listed.out)
    return Decimal(row["spent"])


async def held_keys(prefix: str) -> dict[str, int]:
    """Every held counter in Redis under ``prefix``, with its value."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "budget:*held*")]
        values = [int(await client.get(key) or 0) for key in keys]
    finally:
        await client.aclose()
    return {key.decode(): value for key, value in zip(keys, values, strict=True)}


def assert_refused_well(replies: list[Reply]) -> None:
    """Every refusal is a ``budget_exceeded`` 429: held by requests in flight (retry in a
    second) or, once the spend reached the cap, today's refusal."""
    for reply in replies:
        if reply.status == 200:
            continue
        assert (reply.status, reply.body["code"]) == (429, "budget_exceeded"), reply.body
        if "in flight" in reply.body["message"]:
            assert reply.headers["Retry-After"] == "1"
        else:
            assert "is used up" in reply.body["message"]


async def sidecar_with_budget(start_sidecar: SidecarFactory, tmp_path: Path,
                              redis_env: dict[str, str], mode: str = "--hard",
                              **extra: str) -> tuple[Sidecar, str]:
    """A sidecar on Redis with a daily budget of :data:`LIMIT` on alice's key; returns it
    and the key."""
    await after_midnight_margin()
    sidecar = await start_sidecar(**concurrency_env(tmp_path, {}, **redis_env, **extra))
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--key", key.key_id, "--period", "day",
                     "--limit", str(LIMIT), mode)
    await budgets_in_force(sidecar.url, 1)
    return sidecar, key.key


async def test_concurrent_chats_on_one_replica_stop_at_the_cap(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str], redis_prefix: str) -> None:
    sidecar, key = await sidecar_with_budget(start_sidecar, tmp_path, redis_env)
    await mock_upstream.settings(latency_ms=1500)

    replies = await chat_at_once([sidecar.url], key)
    served = sum(1 for r in replies if r.status == 200)
    assert 1 <= served <= FIT, [r.status for r in replies]
    assert sum(1 for r in await mock_upstream.requests()
               if r["path"].endswith("/chat/completions")) == served
    assert_refused_well(replies)
    assert await spent(sidecar.env) <= LIMIT + COST
    # Every reservation was given back: the held counters are back to nothing.
    held = await held_keys(redis_prefix)
    assert held and set(held.values()) == {0}
    # The cap holds for what comes next.
    after = await call(sidecar.url, "POST", "/v1/chat/completions", key, json=BODY)
    assert after.status == 429 if served * COST >= LIMIT else after.status == 200


async def test_three_replicas_sharing_redis_stop_at_the_cap(
        spawn_sidecar: Callable[..., SidecarProcess], spawn_mock: Callable[..., MockProcess],
        redis_env: dict[str, str], redis_prefix: str, pg_database: dict[str, str],
        tmp_path: Path) -> None:
    await after_midnight_margin()
    mock = spawn_mock("--latency-ms", "2000")
    env = concurrency_env(tmp_path, pg_database, **redis_env, MISTRAL_BASE_URL=mock.url,
                          SIDECAR_REDIS_TIMEOUT_MS="2000")
    assert (await run_cli(env, "migrate")).code == 0
    key = await create_key(env, "alice", "user", "acme")
    await set_budget(env, "--key", key.key_id, "--period", "day", "--limit", str(LIMIT),
                     "--hard")
    replicas = [spawn_sidecar(**env) for _ in range(3)]
    for replica in replicas:
        await budgets_in_force(replica.url, 1)

    replies = await chat_at_once([r.url for r in replicas], key.key)
    served = sum(1 for r in replies if r.status == 200)
    assert 1 <= served <= FIT, [r.status for r in replies]
    assert await upstream_chats(mock.url) == served
    assert_refused_well(replies)
    assert await spent(env) <= LIMIT + COST
    held = await held_keys(redis_prefix)
    assert held and set(held.values()) == {0}


async def test_concurrent_chats_stop_at_the_cap_with_the_database_as_backend(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        store_env: dict[str, str]) -> None:
    await after_midnight_margin()
    sidecar = await start_sidecar(**concurrency_env(tmp_path, store_env))
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--key", key.key_id, "--period", "day",
                     "--limit", str(LIMIT), "--hard")
    await budgets_in_force(sidecar.url, 1)
    await mock_upstream.settings(latency_ms=1500)

    replies = await chat_at_once([sidecar.url], key.key)
    served = sum(1 for r in replies if r.status == 200)
    assert 1 <= served <= FIT, [r.status for r in replies]
    assert_refused_well(replies)
    # Written behind: wait for the round that writes the last charges.
    await asyncio.sleep(0.5)
    assert await spent(sidecar.env) <= LIMIT + COST

    # Held rows: those of the window are read back (settled: 0); older ones are deleted.
    backend = sidecar.app[BUDGETS].ledger.shared
    assert isinstance(backend, DatabaseSpend)
    await backend.db.execute("INSERT INTO budget_spend (budget_id, period_start, spent_nanos)"
                             " VALUES (?, ?, ?)", ("bgt_gone", f"held~{minute(utcnow()) - 99}",
                                                   5))
    backend._pruned = 0
    assert await backend.sync()
    rows = await backend.db.fetchall("SELECT budget_id, spent_nanos FROM budget_spend "
                                     "WHERE period_start LIKE 'held~%'")
    assert rows and {(row["budget_id"] == "bgt_gone", row["spent_nanos"]) for row in rows} == {
        (False, 0)}


async def test_reservations_of_a_killed_replica_stop_counting_after_the_window(
        start_sidecar: SidecarFactory, spawn_sidecar: Callable[..., SidecarProcess],
        spawn_mock: Callable[..., MockProcess], redis_env: dict[str, str],
        redis_prefix: str, pg_database: dict[str, str], tmp_path: Path) -> None:
    await after_midnight_margin(200)
    # A 60 s total timeout: no request lives past it, so holds count for 2 minutes.
    env = concurrency_env(tmp_path, pg_database, **redis_env,
                          SIDECAR_UPSTREAM_TOTAL_TIMEOUT_SECONDS="60")
    assert (await run_cli(env, "migrate")).code == 0
    key = await create_key(env, "alice", "user", "acme")
    await set_budget(env, "--key", key.key_id, "--period", "day", "--limit", str(LIMIT),
                     "--hard")
    slow = spawn_mock("--latency-ms", "30000")
    doomed = spawn_sidecar(**env, MISTRAL_BASE_URL=slow.url)
    await budgets_in_force(doomed.url, 1)
    pending = asyncio.gather(*(call(doomed.url, "POST", "/v1/chat/completions", key.key,
                                    json=BODY) for _ in range(FIT)), return_exceptions=True)

    async def all_held() -> bool:
        return sum((await held_keys(redis_prefix)).values()) > LIMIT * 10**9 - 3 * 10**9

    await wait_for(all_held, timeout=10, interval=0.05)
    doomed.signal(signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    await pending

    sidecar = await start_sidecar(**env)
    await budgets_in_force(sidecar.url, 1)
    state = sidecar.app[BUDGETS]
    real = state.wall
    # Within the window the dead replica's reservations still hold the budget.
    for minutes in (0, 1):
        state.wall = lambda minutes=minutes: real() + timedelta(minutes=minutes)
        held = await call(sidecar.url, "POST", "/v1/chat/completions", key.key, json=BODY)
        assert (held.status, held.body["code"]) == (429, "budget_exceeded")
        assert "in flight" in held.body["message"]
        assert held.headers["Retry-After"] == "1"
    # Past it, they no longer count: nothing was spent, the budget serves again.
    state.wall = lambda: real() + timedelta(minutes=2)
    served = await call(sidecar.url, "POST", "/v1/chat/completions", key.key, json=BODY)
    assert served.status == 200, served.body
    assert served.headers["X-Sidecar-Budget-Remaining"] == "15"


async def test_a_request_refused_after_budgets_gives_its_reservation_back(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str],
        redis_prefix: str) -> None:
    sidecar, key = await sidecar_with_budget(
        start_sidecar, tmp_path, redis_env,
        SIDECAR_PLUGINS_CHAIN=f"{CHAIN},tests.budgets.refuse_after_budgets")

    # As many as fit together: each is admitted by budgets, then refused.
    replies = await chat_at_once([sidecar.url], key, count=FIT - 1,
                                 headers={REFUSE_HEADER: "1"})
    assert {r.status for r in replies} == {403}
    held = await held_keys(redis_prefix)
    assert held and set(held.values()) == {0}
    # Nothing held, nothing spent: the whole budget is there.
    assert (await chat_at_once([sidecar.url], key, count=1))[0].status == 200


async def test_a_soft_budget_holds_nothing_and_refuses_nothing(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str], redis_prefix: str) -> None:
    sidecar, key = await sidecar_with_budget(start_sidecar, tmp_path, redis_env, "--soft")
    await mock_upstream.settings(latency_ms=500)

    replies = await chat_at_once([sidecar.url], key, count=20)
    assert [r.status for r in replies] == [200] * 20
    assert await held_keys(redis_prefix) == {}
    assert await spent(sidecar.env) == 20 * COST
