"""The Redis backend against a real Redis: exact counts, atomicity under concurrency, expiry,
the same answers as the in-process backend, many callers at once each getting their own
answer, and an error for one decision leaving the others alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from plugins.ratelimit.gcra import Decision, Limit
from plugins.ratelimit.limiter import BackendUnavailable
from plugins.ratelimit.local_limiter import LocalLimiter
from plugins.ratelimit.redis_limiter import RedisLimiter
from tests.conftest import REDIS_HOST, REDIS_PORT


@pytest.fixture
async def client() -> AsyncIterator[redis.Redis]:
    connection = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    yield connection
    await connection.aclose()


def new_limiter(prefix: str) -> RedisLimiter:
    """A Redis backend with a timeout generous against this machine's scheduling noise."""
    return RedisLimiter(REDIS_HOST, REDIS_PORT, prefix, timeout=2.0)


@pytest.fixture
async def limiter(redis_prefix: str) -> AsyncIterator[RedisLimiter]:
    shared = new_limiter(redis_prefix)
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
    limiters = [new_limiter(redis_prefix) for _ in range(6)]
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
        mine = await local.evaluate(limits)
        assert shared.allowed == mine.allowed
        assert [s.remaining for s in shared.states] == [s.remaining for s in mine.states]
        assert shared.retry_after == pytest.approx(mine.retry_after, abs=0.5)


async def test_the_script_is_reloaded_after_redis_forgets_it(
        limiter: RedisLimiter, client: redis.Redis) -> None:
    assert (await limiter.evaluate([Limit("x", 2, 60)])).allowed
    await client.script_flush()
    second = await limiter.evaluate([Limit("x", 2, 60)])
    assert second.allowed and second.states[0].remaining == 0


async def test_many_callers_at_once_each_get_the_answer_for_their_own_bucket(
        limiter: RedisLimiter) -> None:
    quotas = {f"caller-{i}": 3 + i for i in range(8)}
    # Interleaved, so that each batch sent to Redis mixes callers.
    calls = [(key, quota) for round_ in range(12) for key, quota in quotas.items()
             if round_ < quota + 2]
    decisions = await asyncio.gather(*(limiter.evaluate([Limit(key, quota, 3600)])
                                       for key, quota in calls))
    for key, quota in quotas.items():
        mine = [d for (k, _), d in zip(calls, decisions, strict=True) if k == key]
        assert [d.allowed for d in mine] == [True] * quota + [False] * 2
        assert [d.states[0].remaining for d in mine] == [*range(quota - 1, -1, -1), 0, 0]


async def test_an_error_for_one_decision_leaves_those_sent_with_it_alone(
        limiter: RedisLimiter, client: redis.Redis, redis_prefix: str) -> None:
    # Something else wrote a list where a bucket belongs: the script fails on that key only.
    await client.rpush(redis_prefix + "broken", "x")
    results = await asyncio.gather(limiter.evaluate([Limit("broken", 5, 60)]),
                                   *(limiter.evaluate([Limit("fine", 5, 60)]) for _ in range(5)),
                                   return_exceptions=True)
    failed, fine = results[0], [r for r in results[1:] if isinstance(r, Decision)]
    assert isinstance(failed, BackendUnavailable) and failed.reason == "error"
    assert "WRONGTYPE" in str(failed)
    assert [d.states[0].remaining for d in fine] == [4, 3, 2, 1, 0]
