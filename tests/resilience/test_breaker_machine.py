"""The circuit breaker's state machine, per Resilience4j's rules, with an injected clock."""

from __future__ import annotations

import pytest

from plugins.breaker import (
    BreakerConfig,
    CallNotPermitted,
    CircuitBreaker,
    Outcome,
    State,
    outcome_for_status,
)

F, S, N = Outcome.FAILURE, Outcome.SUCCESS, Outcome.IGNORED  # N: neither


class Clock:
    """Monotonic time moved by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    """A breaker, its clock and the transitions it reported."""

    def __init__(self, **config: object) -> None:
        self.clock = Clock()
        self.transitions: list[tuple[str, str]] = []
        self.breaker = CircuitBreaker(
            BreakerConfig(**config),  # type: ignore[arg-type]
            clock=self.clock,
            on_transition=lambda a, b: self.transitions.append((a.value, b.value)))

    @property
    def state(self) -> State:
        return self.breaker.state

    def calls(self, *outcomes: Outcome, takes: float = 0.0) -> None:
        """Run calls one after another, each taking ``takes`` seconds."""
        for outcome in outcomes:
            permit = self.breaker.acquire()
            self.clock.now += takes
            self.breaker.record(permit, outcome)

    def rejected(self) -> CallNotPermitted:
        with pytest.raises(CallNotPermitted) as refused:
            self.breaker.acquire()
        return refused.value


def opened(**config: object) -> Harness:
    """A breaker that has just opened (window 4, minimum 4, wait 30 s unless overridden)."""
    settings: dict[str, object] = {"window_size": 4, "minimum_calls": 4, "wait_in_open": 30.0}
    settings.update(config)
    harness = Harness(**settings)
    harness.calls(F, F, F, F)
    assert harness.state is State.OPEN
    return harness


def test_status_classification() -> None:
    assert [outcome_for_status(s) for s in (200, 201, 304, 400, 401, 404, 429, 500, 502, 504)] \
        == [S, S, S, N, N, N, N, F, F, F]


def test_below_the_minimum_number_of_calls_it_never_trips() -> None:
    h = Harness(window_size=10, minimum_calls=5)
    h.calls(F, F, F, F)
    assert h.state is State.CLOSED and h.breaker.rates().failure_rate() == 100.0
    h.calls(F)
    assert h.state is State.OPEN and h.transitions == [("closed", "open")]


def test_minimum_is_bounded_by_a_count_window() -> None:
    h = Harness(window_size=3, minimum_calls=100)
    h.calls(F, F, F)
    assert h.state is State.OPEN


@pytest.mark.parametrize(("outcomes", "state"), [
    ((F, S, S, F), State.OPEN),      # 50 % reaches a 50 % threshold
    ((S, S, S, F), State.CLOSED),    # 25 % does not
    ((S, F, S, S), State.CLOSED),
])
def test_failure_rate_threshold_is_inclusive(outcomes: tuple[Outcome, ...],
                                              state: State) -> None:
    h = Harness(window_size=4, minimum_calls=4, failure_rate_threshold=50.0)
    h.calls(*outcomes)
    assert h.state is state


def test_count_window_forgets_the_oldest_calls() -> None:
    h = Harness(window_size=3, minimum_calls=3, failure_rate_threshold=60.0)
    h.calls(F, S, S, S, F)
    assert h.state is State.CLOSED  # window S, S, F: 33 %
    h.calls(F)
    # Window S, F, F: 67 %. Had the first failure still counted it would be 3 of 6: 50 %.
    assert h.state is State.OPEN


def test_callers_errors_and_rate_limits_count_neither_way() -> None:
    h = Harness(window_size=4, minimum_calls=4)
    h.calls(F, F, N, N, N, N, N, N)
    assert h.state is State.CLOSED and h.breaker.rates().calls == 2
    h.calls(F, S)
    assert h.state is State.OPEN


def test_slow_calls_open_the_breaker_even_when_they_succeed() -> None:
    h = Harness(window_size=4, minimum_calls=4, slow_call_duration=2.0,
                slow_call_rate_threshold=50.0)
    h.calls(S, S, takes=1.0)
    h.calls(S, takes=2.0)  # exactly the threshold is not slow
    h.calls(S, takes=2.5)
    assert h.state is State.CLOSED and h.breaker.rates().slow_rate() == 25.0
    h.calls(S, takes=3.0)
    assert h.state is State.OPEN and h.breaker.rates().failure_rate() == 0.0


def test_open_rejects_with_the_remaining_wait_and_moves_on_lazily() -> None:
    h = opened(wait_in_open=30.0)
    assert h.rejected().retry_after == 30.0
    h.clock.now += 29.5
    refused = h.rejected()
    assert refused.state is State.OPEN and refused.retry_after == pytest.approx(0.5)
    h.clock.now += 0.5
    assert h.state is State.OPEN  # nothing happens until a call arrives
    h.breaker.acquire()
    assert h.state is State.HALF_OPEN
    assert h.transitions == [("closed", "open"), ("open", "half_open")]


def test_half_open_admits_only_the_permitted_calls() -> None:
    h = opened(half_open_calls=3)
    h.clock.now += 30
    permits = [h.breaker.acquire() for _ in range(3)]
    refused = h.rejected()
    assert refused.state is State.HALF_OPEN and refused.retry_after == 1.0
    assert all(p.trial for p in permits)


def test_one_failure_alone_does_not_reopen() -> None:
    h = opened(half_open_calls=3)
    h.clock.now += 30
    h.calls(F)
    assert h.state is State.HALF_OPEN
    h.calls(S, S)
    # The half-open window is fresh: the failures that opened the breaker do not count.
    assert h.state is State.CLOSED
    assert h.transitions[-1] == ("half_open", "closed")
    assert h.breaker.rates().calls == 0


def test_half_open_failure_rate_at_threshold_reopens_for_a_full_wait() -> None:
    h = opened(half_open_calls=3, failure_rate_threshold=60.0)
    h.clock.now += 30
    h.calls(S, F, F)
    assert h.state is State.OPEN
    assert h.rejected().retry_after == 30.0
    assert h.transitions[-2:] == [("open", "half_open"), ("half_open", "open")]


def test_cancelled_trial_call_gives_its_permit_back() -> None:
    h = opened(half_open_calls=2)
    h.clock.now += 30
    first = h.breaker.acquire()
    second = h.breaker.acquire()
    h.rejected()
    h.breaker.release(first)
    h.breaker.release(first)  # releasing twice must not mint a permit
    third = h.breaker.acquire()
    h.rejected()
    h.breaker.record(second, S)
    h.breaker.record(third, S)
    assert h.state is State.CLOSED


def test_ignored_trial_call_gives_its_permit_back() -> None:
    h = opened(half_open_calls=1)
    h.clock.now += 30
    h.calls(N)
    assert h.state is State.HALF_OPEN
    h.calls(S)
    assert h.state is State.CLOSED


def test_late_outcomes_of_an_earlier_state_are_dropped() -> None:
    h = Harness(window_size=2, minimum_calls=2, half_open_calls=1, wait_in_open=10.0)
    straggler = h.breaker.acquire()  # admitted while closed, answers much later
    h.calls(F, F)
    assert h.state is State.OPEN
    h.clock.now += 10
    trial = h.breaker.acquire()
    h.breaker.record(straggler, F)
    assert h.state is State.HALF_OPEN
    h.breaker.record(trial, S)
    assert h.state is State.CLOSED


def test_time_window_counts_the_last_seconds_only() -> None:
    h = Harness(window_type="time", window_size=2, minimum_calls=3)
    h.clock.now = 1000.1
    h.calls(F)
    h.clock.now = 1000.9
    h.calls(F)
    h.clock.now = 1002.05  # the bucket of second 1000 has left the 2-second window
    h.calls(F)
    assert h.state is State.CLOSED and h.breaker.rates().calls == 1
    h.clock.now = 1002.5
    h.calls(S)
    h.clock.now = 1003.2
    h.calls(F)
    assert h.state is State.OPEN  # 3 calls in seconds 1002-1003, 2 failed: 67 %


def test_time_window_minimum_is_not_bounded_by_its_size() -> None:
    h = Harness(window_type="time", window_size=1, minimum_calls=5)
    h.calls(F, F, F, F)
    assert h.state is State.CLOSED
    h.calls(F)
    assert h.state is State.OPEN


def test_disabled_never_trips_and_forced_open_always_rejects() -> None:
    h = Harness(window_size=2, minimum_calls=2, state="disabled")
    h.calls(F, F, F, F)
    assert h.state is State.DISABLED and h.transitions == []
    forced = Harness(state="forced_open", wait_in_open=30.0)
    refused = forced.rejected()
    assert refused.state is State.FORCED_OPEN and refused.retry_after == 30.0
    forced.clock.now += 3600
    forced.rejected()
