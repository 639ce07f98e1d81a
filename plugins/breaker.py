"""The circuit-breaker plugin: stop calling an upstream that is failing, with Resilience4j's
semantics.

States: ``closed`` (calls pass and are recorded in a sliding window), ``open`` (calls are
answered at once with 503 and ``Retry-After``, upstream is not touched), ``half_open`` (a few
trial calls pass; their own fresh window decides between ``closed`` and ``open``), and the
operator states ``disabled`` (always pass, never record) and ``forced_open`` (always reject),
chosen with ``SIDECAR_BREAKER_STATE``.

The window is count-based (the last N calls) or time-based (the calls of the last N seconds,
in one-second buckets). Once it holds the minimum number of calls, the breaker opens when the
failure rate or the slow-call rate reaches its threshold. ``open`` becomes ``half_open``
lazily, on the first call after the wait. A failure is an upstream fault: a 5xx status or a
connection error, reset or timeout. Callers' 4xx and upstream's 429 are neither failure nor
success (a rate limit says "slow down", not "broken"; the retry and key-pool plugins deal
with it), and a cancelled call is not recorded either; such calls give their half-open
permit back.

One deliberate difference from Resilience4j: a call's outcome is recorded only in the state
period it was admitted in. A slow call admitted while ``closed`` that fails after the
breaker moved on does not pollute the half-open trial window.

Defaults are smaller than Resilience4j's (window 100 calls, minimum 100, wait 60 s, 10
half-open calls) because a sidecar serves one application, not a fleet: 100 calls may be
minutes of traffic, during which every call of the application waits for an upstream that
is down. Window 20 / minimum 10 still needs at least five failures out of ten before
tripping, so one bad second does not. 30 s in ``open`` gives an overloaded upstream room
while keeping the application cut off for only half a minute if the trouble was brief; 3
trial calls decide quickly and cost little if upstream is still down.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.backoff import retry_after_header
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.errors import SidecarError, UpstreamError
from proxy.event_registry import EventMetric, EventSpec, LevelWhen
from proxy.events import emit
from proxy.settings import Setting, Settings

__all__ = [
    "BREAKER",
    "BreakerConfig",
    "CallNotPermitted",
    "CircuitBreaker",
    "CountWindow",
    "Outcome",
    "Permit",
    "State",
    "TimeWindow",
    "outcome_for_status",
]


class State(StrEnum):
    """Breaker states; the values are what logs, metrics and ``/readyz`` show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"


class Outcome(Enum):
    """How one call counts."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


def outcome_for_status(status: int) -> Outcome:
    """5xx is a failure; 4xx (429 included) is the caller's business; the rest succeeded."""
    if status >= 500:
        return Outcome.FAILURE
    if status >= 400:
        return Outcome.IGNORED
    return Outcome.SUCCESS


@dataclass(frozen=True, slots=True)
class Rates:
    """What a window holds: calls, failed calls and slow calls."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    def failure_rate(self) -> float:
        """Failed calls in percent (0 for an empty window)."""
        return 100.0 * self.failures / self.calls if self.calls else 0.0

    def slow_rate(self) -> float:
        """Slow calls in percent (0 for an empty window)."""
        return 100.0 * self.slow / self.calls if self.calls else 0.0


class CountWindow:
    """The outcomes of the last ``size`` calls."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._calls: deque[tuple[bool, bool]] = deque()
        self._failures = 0
        self._slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one call's outcome, dropping the oldest beyond ``size``."""
        self._calls.append((failed, slow))
        self._failures += failed
        self._slow += slow
        if len(self._calls) > self.size:
            old_failed, old_slow = self._calls.popleft()
            self._failures -= old_failed
            self._slow -= old_slow

    def rates(self, now: float) -> Rates:
        """Totals over the window."""
        return Rates(len(self._calls), self._failures, self._slow)


class TimeWindow:
    """The outcomes of the calls of the last ``size`` seconds, in one-second buckets."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow]

    def _expire(self, now: float) -> None:
        oldest = math.floor(now) - self.size + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one call's outcome to the bucket of the current second."""
        self._expire(now)
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow

    def rates(self, now: float) -> Rates:
        """Totals over the buckets still inside the window."""
        self._expire(now)
        return Rates(
            sum(b[1] for b in self._buckets),
            sum(b[2] for b in self._buckets),
            sum(b[3] for b in self._buckets),
        )


Window = CountWindow | TimeWindow


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds and sizes; rates in percent, durations in seconds."""

    window_type: str = "count"
    window_size: int = 20
    minimum_calls: int = 10
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration: float = 60.0
    wait_in_open: float = 30.0
    half_open_calls: int = 3
    state: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        """The configuration the ``breaker.*`` settings describe."""
        return cls(
            window_type=str(settings["breaker.window_type"]),
            window_size=int(settings["breaker.window_size"]),
            minimum_calls=int(settings["breaker.minimum_calls"]),
            failure_rate_threshold=float(settings["breaker.failure_rate_threshold"]),
            slow_call_rate_threshold=float(settings["breaker.slow_call_rate_threshold"]),
            slow_call_duration=float(settings["breaker.slow_call_duration_seconds"]),
            wait_in_open=float(settings["breaker.wait_seconds"]),
            half_open_calls=int(settings["breaker.half_open_calls"]),
            state=str(settings["breaker.state"]),
        )


class CallNotPermitted(Exception):
    """The breaker refuses the call; ``retry_after`` is the remaining wait in seconds."""

    def __init__(self, state: State, retry_after: float) -> None:
        super().__init__(f"circuit breaker is {state.value}")
        self.state = state
        self.retry_after = retry_after


@dataclass(slots=True)
class Permit:
    """Admission of one call: recorded or released exactly once."""

    generation: int
    started: float
    trial: bool
    settled: bool = False


class CircuitBreaker:
    """The state machine. ``clock`` returns monotonic seconds; ``on_transition(from, to)`` is
    told about every state change."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[State, State], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.on_transition = on_transition
        self._generation = 0
        self._opened_at = 0.0
        self._permits = 0
        self._window: Window = self._closed_window()
        forced = {"disabled": State.DISABLED, "forced_open": State.FORCED_OPEN}
        self._state = forced.get(config.state, State.CLOSED)
        if self._state is State.FORCED_OPEN:
            self._opened_at = clock()

    @property
    def state(self) -> State:
        """The current state (``open`` until a call arrives after the wait)."""
        return self._state

    def _closed_window(self) -> Window:
        if self.config.window_type == "time":
            return TimeWindow(self.config.window_size)
        return CountWindow(self.config.window_size)

    def _minimum_calls(self) -> int:
        if self._state is State.HALF_OPEN:
            return self.config.half_open_calls
        if self.config.window_type == "count":
            # A count window can never hold more calls than its size.
            return min(self.config.minimum_calls, self.config.window_size)
        return self.config.minimum_calls

    def _transition(self, to: State) -> None:
        before = self._state
        self._state = to
        self._generation += 1
        if to is State.OPEN:
            self._opened_at = self.clock()
        elif to is State.HALF_OPEN:
            self._window = CountWindow(self.config.half_open_calls)
            self._permits = self.config.half_open_calls
        elif to is State.CLOSED:
            self._window = self._closed_window()
        if self.on_transition is not None and before is not to:
            self.on_transition(before, to)

    def retry_after(self) -> float:
        """Seconds until the breaker lets calls through again (0 if it does now)."""
        if self._state is State.OPEN:
            return max(0.0, self._opened_at + self.config.wait_in_open - self.clock())
        if self._state is State.FORCED_OPEN:
            return self.config.wait_in_open
        if self._state is State.HALF_OPEN and self._permits <= 0:
            return 1.0
        return 0.0

    def rates(self) -> Rates:
        """What the current window holds."""
        return self._window.rates(self.clock())

    def acquire(self) -> Permit:
        """Admit a call or raise :class:`CallNotPermitted`."""
        now = self.clock()
        state = self._state
        if state is State.OPEN and now >= self._opened_at + self.config.wait_in_open:
            self._transition(State.HALF_OPEN)
            state = self._state
        if state in (State.OPEN, State.FORCED_OPEN):
            raise CallNotPermitted(state, self.retry_after())
        if state is State.HALF_OPEN:
            if self._permits <= 0:
                raise CallNotPermitted(state, self.retry_after())
            self._permits -= 1
            return Permit(self._generation, now, trial=True)
        return Permit(self._generation, now, trial=False)

    def release(self, permit: Permit) -> None:
        """The call was cancelled or its outcome does not count: forget it."""
        if permit.settled:
            return
        permit.settled = True
        if permit.trial and permit.generation == self._generation:
            self._permits += 1

    def record(self, permit: Permit, outcome: Outcome) -> None:
        """Record a finished call's outcome and change state if the window says so."""
        if outcome is Outcome.IGNORED:
            self.release(permit)
            return
        if permit.settled:
            return
        permit.settled = True
        if permit.generation != self._generation or self._state not in (
                State.CLOSED, State.HALF_OPEN):
            return
        now = self.clock()
        slow = now - permit.started > self.config.slow_call_duration
        self._window.record(outcome is Outcome.FAILURE, slow, now)
        rates = self._window.rates(now)
        if rates.calls < self._minimum_calls():
            return
        tripped = (rates.failure_rate() >= self.config.failure_rate_threshold
                   or rates.slow_rate() >= self.config.slow_call_rate_threshold)
        if tripped:
            self._transition(State.OPEN)
        elif self._state is State.HALF_OPEN:
            self._transition(State.CLOSED)


BREAKER = web.AppKey("breaker_breaker", CircuitBreaker)

def _percentage(value: float) -> str | None:
    return None if 0 < value <= 100 else f"must be a percentage in (0, 100], got {value:g}"


#: The events this plugin emits.
EVENTS = (
    EventSpec("breaker.transition", "The circuit breaker changed state.",
              fields=("from_state", "to_state"),
              levels=(LevelWhen("to_state", "WARNING", ("open", "forced_open")),),
              metrics=(EventMetric("breaker_transitions", "Circuit-breaker state changes.",
                                   ("from_state", "to_state")),)),
    EventSpec("breaker.rejected", "The circuit breaker refused a call.", fields=("state",),
              metrics=(EventMetric("breaker_rejections",
                                   "Calls the circuit breaker refused, by state.",
                                   ("state",)),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Circuit-breaker settings (Resilience4j's names, smaller defaults for a sidecar)."""
    return [
        Setting("breaker.state", "str", "auto",
                "auto (normal operation), disabled (never trips) or forced_open (rejects "
                "every call).",
                choices=("auto", "disabled", "forced_open")),
        Setting("breaker.window_type", "str", "count",
                "Sliding window over the last N calls (count) or the last N seconds (time).",
                choices=("count", "time")),
        Setting("breaker.window_size", "int", 20,
                "Sliding window size: calls (count window) or seconds (time window).", minimum=1),
        Setting("breaker.minimum_calls", "int", 10,
                "Calls the window must hold before rates are evaluated.", minimum=1),
        Setting("breaker.failure_rate_threshold", "float", 50.0,
                "Failure rate (percent) at which the breaker opens.", check=_percentage),
        Setting("breaker.slow_call_rate_threshold", "float", 100.0,
                "Slow-call rate (percent) at which the breaker opens.", check=_percentage),
        Setting("breaker.slow_call_duration_seconds", "float", 60.0,
                "A call whose headers take this long is slow.", minimum=0.001),
        Setting("breaker.wait_seconds", "float", 30.0,
                "Time in the open state before trial calls are let through.", minimum=0),
        Setting("breaker.half_open_calls", "int", 3,
                "Trial calls in the half-open state; their failure rate decides.", minimum=1),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Create the breaker; transitions become ``breaker.transition`` events."""

    def on_transition(before: State, after: State) -> None:
        emit(app, "breaker.transition", None, from_state=before.value, to_state=after.value)

    app[BREAKER] = CircuitBreaker(BreakerConfig.from_settings(app[SETTINGS]),
                                  on_transition=on_transition)


def _rejection(state: State, retry_after: float) -> SidecarError:
    wait = retry_after_header(retry_after)
    return SidecarError(
        503,
        f"Upstream is failing and the sidecar's circuit breaker is {state.value}; "
        f"retry after {wait} s.",
        type="service_unavailable",
        code="circuit_open",
        headers={"Retry-After": wait},
    )


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall:
    """Admit each attempt through the breaker and record how it went."""
    breaker = ctx.app[BREAKER]

    async def guarded(ctx: RequestContext) -> UpstreamResponse:
        try:
            permit = breaker.acquire()
        except CallNotPermitted as refused:
            ctx.log["breaker"] = refused.state.value
            emit(ctx.app, "breaker.rejected", ctx, state=refused.state.value)
            raise _rejection(refused.state, refused.retry_after) from None
        try:
            response = await call(ctx)
        except UpstreamError:
            breaker.record(permit, Outcome.FAILURE)
            raise
        except BaseException:
            # Cancelled, or refused before reaching upstream (body too large ...).
            breaker.release(permit)
            raise
        breaker.record(permit, outcome_for_status(response.status))
        return response

    return guarded


@hookimpl
def readiness(app: web.Application) -> dict[str, Any] | None:
    """Report the breaker's state without ever making the sidecar unready.

    An open breaker means upstream is failing, not this process. In Kubernetes a sidecar's
    readiness gates the whole pod: reporting unready would take the application itself out of
    its Service for as long as Mistral has trouble, turning a partial outage (calls to one API
    fail fast with a clear 503 and ``Retry-After``) into a total one. Every replica shares the
    same upstream, so all of them would drop out together, and a restart cannot fix upstream.
    The half-open trials also need traffic to close the breaker again.
    """
    breaker = app.get(BREAKER)
    if breaker is None:
        return None
    rates = breaker.rates()
    return {"breaker": {
        "ok": True,
        "state": breaker.state.value,
        "retry_after_s": round(breaker.retry_after(), 3),
        "window_calls": rates.calls,
        "failure_rate": round(rates.failure_rate(), 1),
        "slow_call_rate": round(rates.slow_rate(), 1),
    }}


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """``breaker_state`` once per state (1 for the current one), and the window's rates."""
    breaker = app.get(BREAKER)
    if breaker is None:
        return None
    current = breaker.state
    rates = breaker.rates()
    values: list[tuple[str, dict[str, str], float]] = [
        ("breaker_state", {"state": state.value}, 1.0 if state is current else 0.0)
        for state in State
    ]
    values.append(("breaker_failure_rate_percent", {}, rates.failure_rate()))
    values.append(("breaker_slow_call_rate_percent", {}, rates.slow_rate()))
    return values
