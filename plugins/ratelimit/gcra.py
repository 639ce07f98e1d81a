"""The limiter's arithmetic (GCRA), shared by every backend.

GCRA, the generic cell rate algorithm, stores one number per key: the *theoretical arrival
time* (TAT). A quota of ``q`` units per ``w`` seconds gives every unit a cost of ``T = w / q``
seconds; the key is "in debt" by ``used = TAT - now`` seconds, and a request needing ``c``
units is allowed while ``used + c * T <= w``. Taking ``n`` units moves the TAT forward by
``n * T``. Nothing needs resetting: debt drains as the clock advances, and a key whose TAT is in
the past is the same as a key never seen, so it can expire at its TAT.

Request limits check and take one unit. Token limits check for one token (a key whose budget
is empty or negative is refused) and take the request's estimated prompt tokens, so that
requests in flight together cannot all pass; the difference with the usage upstream reports
is settled after the response, without a check (a negative amount gives tokens back), so a
large answer may drive the budget negative.

The in-process backend (:mod:`plugins.ratelimit.local_limiter`) runs :func:`decide` on an
injected clock; the Redis backend's Lua script (:mod:`plugins.ratelimit.redis_limiter`) performs
exactly the same arithmetic in microseconds on Redis ``TIME``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Tolerance (seconds) for float rounding at the exact boundary; the Lua script uses 1 us too.
EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit to evaluate for one request.

    ``key`` names the bucket; ``quota`` units per ``window`` seconds; ``check`` units must be
    available for the request to pass (0: no check); ``consume`` units are taken when it passes.
    """

    key: str
    quota: int
    window: int
    check: int = 1
    consume: int = 1
    #: Seconds it takes to restore one unit.
    period: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "period", self.window / self.quota)


@dataclass(frozen=True, slots=True)
class LimitState:
    """A bucket after a decision: whole units left (negative when in debt) and the seconds
    until that count grows by one (0 when the bucket is full)."""

    remaining: int
    reset_after: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of evaluating some limits together (all pass, or none takes anything).

    ``retry_after`` is how many seconds until the refused request would pass (0 when allowed);
    ``states`` are in the order the limits were given.
    """

    allowed: bool
    retry_after: float
    states: tuple[LimitState, ...]


def whole_seconds(seconds: float) -> int:
    """Round a wait up to whole seconds, ignoring float noise below :data:`EPS`."""
    return max(0, math.ceil(seconds - EPS))


def seconds_until_available(limit: Limit, state: LimitState) -> float:
    """Seconds until at least one unit is available again (the ``t`` clients should wait).

    For a bucket with units left this is the time until one more comes back; for an empty or
    indebted bucket it is the time until the count is back to one, so a client waiting that
    long is never refused for lack of that unit.
    """
    if state.remaining > 0:
        return state.reset_after
    return state.reset_after + (-state.remaining) * limit.period


def decide(now: float, tats: Sequence[float | None], limits: Sequence[Limit]
           ) -> tuple[Decision, list[float | None]]:
    """Evaluate ``limits`` at ``now`` given each key's stored TAT (``None``: never seen).

    Returns the decision and the TATs to store (``None`` where nothing changed).
    """
    bases = [now if tat is None or tat < now else tat for tat in tats]
    allowed = True
    retry = 0.0
    for limit, base in zip(limits, bases, strict=True):
        if limit.check > 0:
            wait = base - now + limit.check * limit.period - limit.window
            if wait > EPS:
                allowed = False
                retry = max(retry, wait)
    states: list[LimitState] = []
    updates: list[float | None] = []
    for limit, base in zip(limits, bases, strict=True):
        tat = base
        update: float | None = None
        if allowed and limit.consume != 0:
            # A negative amount gives units back; a bucket is never fuller than full.
            tat = max(now, base + limit.consume * limit.period)
            update = tat
        updates.append(update)
        states.append(_state(limit, tat - now))
    return Decision(allowed, 0.0 if allowed else retry, tuple(states)), updates


def _state(limit: Limit, used: float) -> LimitState:
    period = limit.period
    remaining = math.floor((limit.window - used + EPS) / period)
    if used <= EPS:
        return LimitState(remaining, 0.0)
    return LimitState(remaining, max(0.0, used - (limit.window - (remaining + 1) * period)))

