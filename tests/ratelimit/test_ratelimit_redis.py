"""The Lua script against a real Redis: exact counts, atomicity under concurrency, expiry, and
the same answers as the in-process limiter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from plugins.ratelimit.gcra import Limit, LocalLimiter
from plugins.ratelimit.redis_limiter import RedisLimiter
from tests.conftest import REDIS_HOST, REDIS_PORT


@pytest.fixture
async def client() -> AsyncIterator[redis.Redis]:
    connection = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    yield connection
    await connection.aclose()


@pytest.fixture
async def limiter(redis_prefix: str) -> AsyncIterator[RedisLimiter]:
    shared = RedisLimiter(REDIS_HOST, REDIS_PORT, redis_prefix, timeout=2.0)
    yield shared
    await shared.close()


async def test_the_script_admits_exactly_the_quota_and_counts_down(
        limiter: RedisLimiter) -> None:
    decisions = [await limiter.evaluate([Limit("caller", 5, 60)]) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.states[0].remaining for d in decisions] == [4, 3, 2, 1, 0, 0, 0]
    refused = decisions[-1]
    assert 11.5 < refused.retry_after <= 12.0
    assert refused.states[0].reset_after == pytest.approx(refused.retry_after, abs=1e-5)


async def test_every_key_written_expires_when_its_debt_is_paid(
        limiter: RedisLimiter, client: redis.Redis, redis_prefix: str) -> None:
    await limiter.evaluate([Limit("a", 5, 60)])
    ttl = await client.pttl(redis_prefix + "a")
    assert 11_500 < ttl <= 12_000
    await limiter.evaluate([Limit("tok", 600, 60, check=0, consume=300)])
    assert 29_500 < await client.pttl(redis_prefix + "tok") <= 30_000
    # A check that takes nothing writes nothing.
    await limiter.evaluate([Limit("idle", 600, 60, check=1, consume=0)])
    assert await client.exists(redis_prefix + "idle") == 0


async def test_concurrent_decisions_from_many_connections_never_over_admit(
        redis_prefix: str) -> None:
    limiters = [RedisLimiter(REDIS_HOST, REDIS_PORT, redis_prefix, timeout=2.0) for _ in range(6)]
    try:
        limit = Limit("shared", 50, 3600)
        decisions = await asyncio.gather(
            *(limiters[i % 6].evaluate([limit]) for i in range(300)))
    finally:
        for shared in limiters:
            await shared.close()
    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.states[0].remaining for d in decisions if d.allowed) == list(range(50))


async def test_token_budgets_go_negative_and_refuse_until_paid_back(
        limiter: RedisLimiter) -> None:
    check = Limit("t", 6000, 60, check=1, consume=0)
    assert (await limiter.evaluate([check])).states[0].remaining == 6000
    await limiter.evaluate([Limit("t", 6000, 60, check=0, consume=5000)])
    assert (await limiter.evaluate([check])).allowed
    debited = await limiter.evaluate([Limit("t", 6000, 60, check=0, consume=3000)])
    assert debited.allowed
    assert -2000 <= debited.states[0].remaining <= -1999
    refused = await limiter.evaluate([check])
    assert not refused.allowed
    assert 19.5 < refused.retry_after <= 20.01  # 2001 tokens at 100 per second


async def test_limits_in_one_call_are_all_or_nothing(limiter: RedisLimiter) -> None:
    await limiter.evaluate([Limit("tok", 60, 60, check=0, consume=120)])
    both = [Limit("req", 5, 60), Limit("tok", 60, 60, check=1, consume=0)]
    refused = await limiter.evaluate(both)
    assert not refused.allowed
    assert refused.states[0].remaining == 5
    assert (await limiter.evaluate([Limit("req", 5, 60)])).states[0].remaining == 4


async def test_redis_and_in_process_limiters_give_the_same_answers(
        limiter: RedisLimiter) -> None:
    local = LocalLimiter(lambda: 0.0)
    sequence = [
        [Limit("r", 10, 3600)] * 1,
        [Limit("r", 10, 3600), Limit("t", 1000, 60, check=1, consume=0)],
        [Limit("t", 1000, 60, check=0, consume=1400)],
        [Limit("r", 10, 3600), Limit("t", 1000, 60, check=1, consume=0)],
        *([[Limit("r", 10, 3600)]] * 11),
    ]
    for limits in sequence:
        shared = await limiter.evaluate(limits)
        mine = local.evaluate(limits)
        assert shared.allowed == mine.allowed
        assert [s.remaining for s in shared.states] == [s.remaining for s in mine.states]
        assert shared.retry_after == pytest.approx(mine.retry_after, abs=0.5)


async def test_the_script_is_reloaded_after_redis_forgets_it(
        limiter: RedisLimiter, client: redis.Redis) -> None:
    assert (await limiter.evaluate([Limit("x", 2, 60)])).allowed
    await client.script_flush()
    second = await limiter.evaluate([Limit("x", 2, 60)])
    assert second.allowed and second.states[0].remaining == 0
