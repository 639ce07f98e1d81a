"""The retry state machine with an injected clock, sleep and random source: no real waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from plugins.retry import Retrier, RetryBudget, RetryPolicy, creates_state
from proxy.backoff import full_jitter_delay, parse_retry_after, retry_after_header
from proxy.errors import UpstreamError
from proxy.loader import load
from proxy.settings import ConfigError

NOW = 1_800_000_000.0  # an arbitrary wall-clock instant


@dataclass
class Answer:
    """Stands in for aiohttp's response: a status, headers and a release flag."""

    status: int
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    released: bool = False

    async def release(self) -> None:
        self.released = True


class Clock:
    """Monotonic time that moves only when told to (or when the retrier sleeps)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def answers(*items: int | Answer | UpstreamError, clock: Clock | None = None,
            takes: float = 0.0) -> tuple[Callable[[], Awaitable[Answer]], list[Answer]]:
    """A call that plays ``items`` in order (statuses, answers or errors to raise)."""
    script = [Answer(i) if isinstance(i, int) else i for i in items]
    given: list[Answer] = []

    async def call() -> Answer:
        if clock is not None:
            clock.now += takes
        item = script.pop(0)
        if isinstance(item, UpstreamError):
            raise item
        given.append(item)
        return item

    return call, given


def retrier(clock: Clock, random: float = 0.5, **policy: object) -> Retrier:
    return Retrier(RetryPolicy(**policy),  # type: ignore[arg-type]
                   clock=clock, wall_clock=lambda: NOW, sleep=clock.sleep,
                   random=lambda: random)


# --- backoff arithmetic -----------------------------------------------------------------------


def test_full_jitter_bounds_grow_as_envoy_and_stop_at_ten_times_base() -> None:
    almost_one = 1 - 1e-12
    uppers = [full_jitter_delay(n, 0.025, 0.25, lambda: almost_one) for n in range(1, 7)]
    assert uppers == pytest.approx([0.025, 0.075, 0.175, 0.25, 0.25, 0.25])
    assert all(full_jitter_delay(n, 0.025, 0.25, lambda: 0.0) == 0.0 for n in range(1, 7))
    assert full_jitter_delay(2, 0.025, 0.25, lambda: 0.5) == pytest.approx(0.0375)
    assert full_jitter_delay(500, 0.025, 0.25, lambda: 0.5) == pytest.approx(0.125)


def test_retry_after_forms_and_precedence() -> None:
    def parse(**headers: str) -> float | None:
        return parse_retry_after(CIMultiDict({k.replace("_", "-"): v for k, v in
                                              headers.items()}), NOW)

    assert parse(Retry_After="3") == 3.0
    assert parse(retry_after_ms="1500") == 1.5
    assert parse(Retry_After="3", retry_after_ms="250") == 0.25
    assert parse(Retry_After=formatdate(NOW + 7, usegmt=True)) == pytest.approx(7.0)
    assert parse(Retry_After=formatdate(NOW - 60, usegmt=True)) == 0.0
    assert parse(Retry_After="soon") is None
    assert parse(Retry_After="-1") is None
    assert parse(retry_after_ms="nan", Retry_After="2") == 2.0
    assert parse() is None
    assert retry_after_header(0.2) == "1" and retry_after_header(4.01) == "5"


# --- what is retried --------------------------------------------------------------------------


async def test_two_503s_then_success_waits_with_full_jitter() -> None:
    clock = Clock()
    call, given = answers(503, 503, 200)
    retries: list[tuple[int, str, float]] = []
    result = await retrier(clock).run(call, on_retry=lambda *a: retries.append(a))
    assert result.status == 200
    assert [a.released for a in given] == [True, True, False]
    assert clock.slept == pytest.approx([0.0125, 0.0375])  # half of 25 ms, half of 75 ms
    assert [(a, r) for a, r, _ in retries] == [(2, "http_503"), (3, "http_503")]


async def test_gives_up_after_max_attempts_and_returns_last_answer_unreleased() -> None:
    clock = Clock()
    call, given = answers(502, 504, 429, 200)
    stops: list[str] = []
    result = await retrier(clock, max_attempts=3).run(call, on_stop=stops.append)
    assert result.status == 429 and not result.released
    assert len(given) == 3 and stops == ["max_attempts"]


@pytest.mark.parametrize("status", [500, 501, 400, 401, 404, 422])
async def test_plain_500_and_client_errors_are_not_retried(status: int) -> None:
    call, given = answers(status, 200)
    result = await retrier(Clock()).run(call)
    assert result.status == status and len(given) == 1


async def test_connection_failures_are_retried_and_the_last_error_raised() -> None:
    clock = Clock()
    call, _ = answers(UpstreamError("connect", "x"), UpstreamError("reset", "y"),
                      UpstreamError("timeout", "z"))
    reasons: list[str] = []
    with pytest.raises(UpstreamError) as raised:
        await retrier(clock).run(call, on_retry=lambda a, r, d: reasons.append(r))
    assert raised.value.reason == "timeout"
    assert reasons == ["connect", "reset"]


async def test_retry_statuses_are_configurable() -> None:
    call, given = answers(500, 200)
    result = await retrier(Clock(), retry_statuses=frozenset({500})).run(call)
    assert result.status == 200 and len(given) == 2


# --- Retry-After --------------------------------------------------------------------------------


async def test_retry_after_replaces_the_backoff() -> None:
    clock = Clock()
    call, _ = answers(Answer(429, CIMultiDict({"Retry-After": "2"})),
                      Answer(503, CIMultiDict({"retry-after-ms": "300", "Retry-After": "9"})),
                      200)
    assert (await retrier(clock).run(call)).status == 200
    assert clock.slept == pytest.approx([2.0, 0.3])


async def test_retry_after_as_http_date() -> None:
    clock = Clock()
    call, _ = answers(Answer(503, CIMultiDict({"Retry-After": formatdate(NOW + 4,
                                                                        usegmt=True)})), 200)
    assert (await retrier(clock).run(call)).status == 200
    assert clock.slept == pytest.approx([4.0])


async def test_retry_after_beyond_the_cap_goes_back_to_the_caller() -> None:
    clock = Clock()
    call, given = answers(Answer(429, CIMultiDict({"Retry-After": "30"})), 200)
    stops: list[str] = []
    result = await retrier(clock, retry_after_cap=10.0).run(call, on_stop=stops.append)
    assert result.status == 429 and result.headers["Retry-After"] == "30"
    assert not result.released and len(given) == 1 and clock.slept == []
    assert stops == ["retry_after_too_long"]


async def test_no_retry_starts_after_the_deadline() -> None:
    clock = Clock()
    call, given = answers(503, 503, 503, clock=clock, takes=10.0)
    stops: list[str] = []
    result = await retrier(clock, max_attempts=5, deadline=15.0).run(call, on_stop=stops.append)
    assert result.status == 503 and len(given) == 2 and stops == ["deadline"]


async def test_a_retry_after_that_would_pass_the_deadline_is_not_waited_out() -> None:
    clock = Clock()
    call, given = answers(Answer(503, CIMultiDict({"Retry-After": "8"})), 200)
    stops: list[str] = []
    await retrier(clock, deadline=5.0).run(call, on_stop=stops.append)
    assert len(given) == 1 and stops == ["deadline"] and clock.slept == []


# --- calls that create state ----------------------------------------------------------------


@pytest.mark.parametrize(("failure", "retried"), [
    (UpstreamError("connect", "refused"), True),
    (429, True),
    (503, True),
    (502, False),
    (504, False),
    (UpstreamError("reset", "reset"), False),
    (UpstreamError("timeout", "slow"), False),
])
async def test_stateful_calls_are_retried_only_when_upstream_provably_did_nothing(
        failure: int | UpstreamError, retried: bool) -> None:
    call, _ = answers(failure, 200)
    try:
        result = await retrier(Clock()).run(call, stateful=True)
    except UpstreamError:
        assert not retried
    else:
        assert (result.status == 200) == retried


async def test_stateful_calls_follow_the_override() -> None:
    call, given = answers(502, 200)
    result = await retrier(Clock(), non_idempotent=True).run(call, stateful=True)
    assert result.status == 200 and len(given) == 2


async def test_streamed_bodies_are_never_replayed() -> None:
    call, _ = answers(UpstreamError("connect", "refused"), 200)
    stops: list[str] = []
    with pytest.raises(UpstreamError):
        await retrier(Clock()).run(call, replayable=False, on_stop=stops.append)
    assert stops == ["unreplayable_body"]
    call, _ = answers(503, 200)
    assert (await retrier(Clock()).run(call, replayable=False)).status == 503


def test_which_operations_create_state() -> None:
    for name in ("conversations.start", "conversations.append_stream", "conversations.restart",
                 "agents.create", "agents.update", "files.upload", "batch.jobs.create",
                 "libraries.create", "unknown"):
        method = "PATCH" if name == "agents.update" else "POST"
        assert creates_state(method, name), name
    for method, name in (("POST", "chat.complete"), ("POST", "embeddings.create"),
                         ("POST", "fim.complete"), ("POST", "agents.complete"),
                         ("GET", "conversations.get"), ("DELETE", "files.delete"),
                         ("PUT", "libraries.replace")):
        assert not creates_state(method, name), name


# --- retry budget -------------------------------------------------------------------------------


def test_budget_is_a_share_of_active_requests_with_a_floor() -> None:
    budget = RetryBudget(20.0, 3)
    budget.active = 10
    assert budget.allowed() == 3
    budget.active = 40
    assert budget.allowed() == 8
    taken = [budget.try_acquire() for _ in range(9)]
    assert taken == [True] * 8 + [False]
    budget.release()
    assert budget.try_acquire()


async def test_spent_budget_stops_retries_until_one_finishes() -> None:
    gate = asyncio.Event()
    clock = Clock()

    async def held_sleep(seconds: float) -> None:
        await gate.wait()

    machine = Retrier(RetryPolicy(budget_percent=0.0, budget_min_concurrent=1), clock=clock,
                      sleep=held_sleep, random=lambda: 0.5)
    first_call, _ = answers(503, 200)
    first = asyncio.create_task(machine.run(first_call))
    await asyncio.sleep(0)
    assert machine.budget.retries == 1 and machine.budget.active == 1

    second_call, second_given = answers(503, 200)
    stops: list[str] = []
    second = await machine.run(second_call, on_stop=stops.append)
    assert second.status == 503 and len(second_given) == 1 and stops == ["budget"]

    gate.set()
    assert (await first).status == 200
    assert (machine.budget.retries, machine.budget.active) == (0, 0)


async def test_cancelled_backoff_gives_its_budget_slot_back() -> None:
    machine = Retrier(RetryPolicy(), clock=Clock(), sleep=lambda s: asyncio.Event().wait())
    call, given = answers(503, 200)
    task = asyncio.create_task(machine.run(call))
    await asyncio.sleep(0)
    assert machine.budget.retries == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (machine.budget.retries, machine.budget.active) == (0, 0)
    assert given[0].released


# --- settings -----------------------------------------------------------------------------------


def test_policy_from_settings_defaults_the_backoff_cap_to_ten_times_base() -> None:
    settings, _ = load(None, {"SIDECAR_PLUGINS_CHAIN": "retry",
                              "SIDECAR_RETRY_BASE_INTERVAL_SECONDS": "0.1",
                              "SIDECAR_RETRY_ON_STATUSES": "500,503"})
    policy = RetryPolicy.from_settings(settings)
    assert policy.max_interval == pytest.approx(1.0)
    assert policy.retry_statuses == frozenset({500, 503})
    assert (policy.max_attempts, policy.deadline, policy.non_idempotent) == (3, 30.0, False)


@pytest.mark.parametrize(("name", "value"), [
    ("SIDECAR_RETRY_MAX_ATTEMPTS", "0"),
    ("SIDECAR_RETRY_ON_STATUSES", "200"),
    ("SIDECAR_RETRY_MAX_INTERVAL_SECONDS", "0.001"),
])
def test_nonsense_settings_are_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(None, {"SIDECAR_PLUGINS_CHAIN": "retry", name: value})
    assert name in str(refused.value)
