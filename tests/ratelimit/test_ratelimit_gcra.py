"""The limiter's state machines on an injected clock: GCRA admission and refill, reset and
Retry-After arithmetic, token debits, the fallback switch, policies and headers."""

from __future__ import annotations

import pytest

from plugins.ratelimit.gcra import Limit, LimitState, seconds_until_available, whole_seconds
from plugins.ratelimit.headers import rate_limit_headers
from plugins.ratelimit.local_limiter import LocalLimiter
from plugins.ratelimit.policy import Policy, PolicyTable, check_overrides
from plugins.ratelimit.service import Attempt, FallbackSwitch, Transition
from proxy.context import Identity


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def requests(quota: int = 5, window: int = 60, key: str = "k") -> Limit:
    return Limit(key, quota, window)


def tokens(per_minute: int, key: str = "t") -> Limit:
    return Limit(key, per_minute, 60, check=1, consume=0)


def debit(per_minute: int, amount: int, key: str = "t") -> Limit:
    return Limit(key, per_minute, 60, check=0, consume=amount)


async def test_a_full_bucket_admits_the_quota_at_once_then_refuses() -> None:
    limiter = LocalLimiter(Clock())
    remaining = [(await limiter.evaluate([requests()])).states[0].remaining for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    refused = await limiter.evaluate([requests()])
    assert not refused.allowed
    assert refused.states[0].remaining == 0
    # 5 per 60 s: one unit comes back every 12 s, the first 12 s after the first request.
    assert refused.retry_after == pytest.approx(12.0)


async def test_units_come_back_exactly_one_period_apart() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    for _ in range(5):
        assert (await limiter.evaluate([requests()])).allowed
    clock.advance(11.999)
    assert not (await limiter.evaluate([requests()])).allowed
    clock.advance(0.001)
    assert (await limiter.evaluate([requests()])).allowed
    assert not (await limiter.evaluate([requests()])).allowed
    clock.advance(24.0)
    assert [(await limiter.evaluate([requests()])).allowed for _ in range(3)] == [True, True, False]


async def test_an_idle_caller_gets_the_whole_quota_back_and_no_more() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    for _ in range(5):
        await limiter.evaluate([requests()])
    clock.advance(3600)
    results = [(await limiter.evaluate([requests()])).allowed for _ in range(6)]
    assert results == [True] * 5 + [False]


async def test_refused_requests_take_nothing() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    for _ in range(5):
        await limiter.evaluate([requests()])
    for _ in range(100):
        assert not (await limiter.evaluate([requests()])).allowed
    clock.advance(12.0)
    assert (await limiter.evaluate([requests()])).allowed


async def test_reset_is_the_time_until_the_next_unit_returns() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    first = (await limiter.evaluate([requests(quota=100, window=60)])).states[0]
    assert first == LimitState(99, pytest.approx(0.6))
    clock.advance(0.2)
    second = (await limiter.evaluate([requests(quota=100, window=60)])).states[0]
    # 1.2 s of debt minus 0.2 s elapsed: 98 left, the 99th is back in 0.4 s.
    assert second.remaining == 98
    assert second.reset_after == pytest.approx(0.4)
    clock.advance(60)
    assert (await limiter.evaluate([])).allowed
    full = (await limiter.evaluate([Limit("k", 100, 60, check=0, consume=0)])).states[0]
    assert full == LimitState(100, 0.0)


async def test_retry_after_never_earlier_than_the_reset_and_never_too_early() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    limit = requests(quota=3, window=10)
    for _ in range(3):
        await limiter.evaluate([limit])
    clock.advance(0.25)
    refused = await limiter.evaluate([limit])
    wait = whole_seconds(refused.retry_after)
    assert wait >= whole_seconds(seconds_until_available(limit, refused.states[0]))
    assert wait == 4  # 10/3 s per unit, 0.25 s already gone: 3.08 s rounds up to 4
    clock.advance(wait - 1)
    assert not (await limiter.evaluate([limit])).allowed
    clock.advance(1)
    assert (await limiter.evaluate([limit])).allowed


def test_whole_seconds_ignores_float_noise_but_rounds_real_fractions_up() -> None:
    assert whole_seconds(12.0000000001) == 12
    assert whole_seconds(12.001) == 13
    assert whole_seconds(0.0) == 0
    assert whole_seconds(-3.0) == 0


async def test_tokens_are_checked_without_being_taken_and_debited_after_the_fact() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    for _ in range(10):
        checked = await limiter.evaluate([tokens(1000)])
        assert checked.allowed
        assert checked.states[0].remaining == 1000
    await limiter.evaluate([debit(1000, 600)])
    assert (await limiter.evaluate([tokens(1000)])).states[0].remaining == 400
    # A large answer drives the budget negative; the caller is refused until it is back to 1.
    after = (await limiter.evaluate([debit(1000, 900)])).states[0]
    assert after.remaining == -500
    refused = await limiter.evaluate([tokens(1000)])
    assert not refused.allowed
    # 501 tokens to earn back at 1000/min: 30.06 s.
    assert refused.retry_after == pytest.approx(30.06)
    assert seconds_until_available(tokens(1000), refused.states[0]) == pytest.approx(30.06)
    clock.advance(30.05)
    assert not (await limiter.evaluate([tokens(1000)])).allowed
    clock.advance(0.01)
    assert (await limiter.evaluate([tokens(1000)])).allowed


async def test_an_empty_token_budget_refuses_even_at_exactly_zero() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    await limiter.evaluate([debit(60, 60)])
    refused = await limiter.evaluate([tokens(60)])
    assert not refused.allowed
    assert refused.states[0].remaining == 0
    clock.advance(1.0)
    assert (await limiter.evaluate([tokens(60)])).allowed


async def test_limits_evaluated_together_are_all_or_nothing() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    await limiter.evaluate([debit(100, 150)])
    refused = await limiter.evaluate([requests(), tokens(100)])
    assert not refused.allowed
    # The request limit passed on its own but took nothing, because the token limit failed.
    assert refused.states[0].remaining == 5
    assert (await limiter.evaluate([requests()])).states[0].remaining == 4


async def test_the_retry_after_of_several_failing_limits_is_the_longest() -> None:
    limiter = LocalLimiter(Clock())
    for _ in range(5):
        await limiter.evaluate([requests()])
    await limiter.evaluate([debit(60, 120)])
    refused = await limiter.evaluate([requests(), tokens(60)])
    assert refused.retry_after == pytest.approx(61.0)


async def test_keys_are_independent_and_forgotten_once_idle() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock)
    for i in range(2000):
        assert (await limiter.evaluate([requests(quota=1, key=f"caller-{i}")])).allowed
    assert not (await limiter.evaluate([requests(quota=1, key="caller-7")])).allowed
    clock.advance(61)
    await limiter.evaluate([requests(quota=1, key="fresh")])
    for i in range(2000):
        await limiter.evaluate([requests(quota=1, key=f"other-{i}")])
    assert len(limiter) <= 2001


# --- fallback switch ------------------------------------------------------------------------


def test_the_switch_falls_back_once_and_probes_one_at_a_time_after_the_interval() -> None:
    clock = Clock()
    switch = FallbackSwitch(probe_interval=1.0, clock=clock)
    assert switch.begin() is Attempt.NORMAL
    assert switch.end(Attempt.NORMAL, False, "timeout") is Transition.ACTIVATED
    assert (switch.active, switch.reason) == (True, "timeout")
    # Requests already in flight that fail too do not report a second outage.
    assert switch.end(Attempt.NORMAL, False, "timeout") is Transition.NONE
    assert switch.begin() is Attempt.SKIP
    clock.advance(1.0)
    assert switch.begin() is Attempt.PROBE
    assert switch.begin() is Attempt.SKIP  # only one probe at a time
    assert switch.end(Attempt.PROBE, False, "unreachable") is Transition.NONE
    assert switch.begin() is Attempt.SKIP
    clock.advance(1.0)
    assert switch.begin() is Attempt.PROBE
    assert switch.end(Attempt.PROBE, True) is Transition.RECOVERED
    assert not switch.active
    assert switch.begin() is Attempt.NORMAL


def test_a_cancelled_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    switch = FallbackSwitch(probe_interval=0.5, clock=clock)
    switch.end(switch.begin(), False, "timeout")
    clock.advance(0.5)
    probe = switch.begin()
    assert probe is Attempt.PROBE
    switch.abandon(probe)
    assert switch.begin() is Attempt.PROBE


# --- policies and headers -------------------------------------------------------------------


def identity(key_id: str, role: str) -> Identity:
    return Identity(key_id=key_id, owner="o", role=role)


def test_overrides_apply_per_role_then_per_key_and_inherit_what_they_leave_out() -> None:
    table = PolicyTable(
        Policy(60, 60, 0),
        {"roles": {"admin": {"requests": 600, "tokens_per_minute": 1000}},
         "keys": {"k-batch": {"window": 3600}, "k-free": {"requests": 0}}},
    )
    assert table.for_identity(None) == Policy(60, 60, 0, "default")
    assert table.for_identity(identity("k1", "user")) == Policy(60, 60, 0, "default")
    assert table.for_identity(identity("k2", "admin")) == Policy(600, 60, 1000, "role")
    assert table.for_identity(identity("k-batch", "admin")) == Policy(600, 3600, 1000, "key")
    assert table.for_identity(identity("k-free", "user")) == Policy(0, 60, 0, "key")


@pytest.mark.parametrize(("value", "problem"), [
    ({}, None),
    ({"roles": {"admin": {"requests": 5}}, "keys": None}, None),
    ([], "must be a mapping"),
    ({"users": {}}, "unknown section 'users'"),
    ({"roles": {"admin": {"rpm": 5}}}, "unknown field 'rpm'"),
    ({"keys": {"k": {"window": 0}}}, "keys.k.window must be an integer >= 1"),
    ({"keys": {"k": {"requests": "5"}}}, "keys.k.requests must be an integer >= 0"),
])
def test_override_validation_names_the_problem(value: object, problem: str | None) -> None:
    message = check_overrides(value)
    if problem is None:
        assert message is None
    else:
        assert message is not None and problem in message


def test_headers_describe_every_policy_and_the_legacy_names_the_first() -> None:
    req, tok = requests(quota=100, window=60), tokens(5000)
    headers = rate_limit_headers(["default", "tokens"], [req, tok],
                                 [LimitState(42, 17.2), LimitState(-30, 0.3)])
    assert headers == {
        "RateLimit-Policy": '"default";q=100;w=60, "tokens";q=5000;w=60',
        # A budget in debt shows 0 left and the time until one token is back (31 * 12 ms).
        "RateLimit": '"default";r=42;t=18, "tokens";r=0;t=1',
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "42",
        "X-RateLimit-Reset": "18",
    }
