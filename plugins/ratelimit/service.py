"""Choosing the limiter for each decision: Redis when it answers in time, else the fallback.

Every Redis call is bounded by a tight timeout. When one fails, the :class:`FallbackSwitch`
stops sending decisions to Redis; in ``open`` mode they go to the in-process limiter, in
``closed`` mode they are refused. After ``probe_interval`` seconds one decision at a time tries
Redis again, and the first success ends the fallback.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plugins.ratelimit.gcra import Decision, Limit, LocalLimiter
from plugins.ratelimit.redis_limiter import RedisLimiter
from plugins.ratelimit.resp import RespError

EventSink = Callable[..., None]


class Transition(enum.Enum):
    """What an attempt's outcome did to the switch."""

    NONE = "none"
    ACTIVATED = "activated"
    RECOVERED = "recovered"


class Attempt(enum.Enum):
    """How a decision should use Redis."""

    NORMAL = "normal"
    PROBE = "probe"
    SKIP = "skip"


class FallbackSwitch:
    """Tracks whether Redis is usable, on an injected clock.

    ``begin`` says whether to try Redis now; ``end`` records how it went and reports a
    transition, so events are emitted once per outage and once per recovery.
    """

    def __init__(self, probe_interval: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.probe_interval = probe_interval
        self.clock = clock
        self.active = False
        self.reason: str | None = None
        self.since: float | None = None
        self._next_probe = 0.0
        self._probing = False

    def skips(self) -> bool:
        """Whether the next decision would skip Redis (an outage, and no probe due)."""
        return self.active and (self._probing or self.clock() < self._next_probe)

    def begin(self) -> Attempt:
        """Whether to try Redis for the next decision (at most one probe at a time)."""
        if not self.active:
            return Attempt.NORMAL
        if self._probing or self.clock() < self._next_probe:
            return Attempt.SKIP
        self._probing = True
        return Attempt.PROBE

    def end(self, attempt: Attempt, ok: bool, reason: str | None = None) -> Transition:
        """Record the outcome of an attempt ``begin`` allowed."""
        if attempt is Attempt.PROBE:
            self._probing = False
        if ok:
            if self.active:
                self.active, self.reason, self.since = False, None, None
                return Transition.RECOVERED
            return Transition.NONE
        now = self.clock()
        self._next_probe = now + self.probe_interval
        if not self.active:
            self.active, self.reason, self.since = True, reason, now
            return Transition.ACTIVATED
        return Transition.NONE

    def abandon(self, attempt: Attempt) -> None:
        """An attempt was cancelled before it finished: free the probe it held."""
        if attempt is Attempt.PROBE:
            self._probing = False


class LimiterUnavailable(Exception):
    """Redis is unusable and the failure mode is ``closed``."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timeout"
    if isinstance(exc, OSError | RedisConnectionError):
        return "unreachable"
    return "error"


class RateLimiter:
    """Evaluates limits on Redis (shared) or in process, with a bounded wait for Redis.

    ``redis`` is ``None`` for the in-process limiter only. ``emit(name, **fields)`` reports
    ``ratelimit.fallback`` transitions.
    """

    def __init__(
        self,
        redis: RedisLimiter | None,
        *,
        timeout: float,
        failure_mode: str,
        probe_interval: float,
        emit: EventSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.timeout = timeout
        self.failure_mode = failure_mode
        self.emit = emit
        self.local = LocalLimiter(clock)
        self.switch = FallbackSwitch(probe_interval, clock)

    @property
    def backend(self) -> str:
        """``redis``, ``memory`` (no Redis configured) or ``fallback`` (Redis unusable)."""
        if self.redis is None:
            return "memory"
        return "fallback" if self.switch.active else "redis"

    def evaluate_now(self, limits: Sequence[Limit]) -> Decision | None:
        """Decide at once when Redis need not be asked (none configured, or skipped during an
        outage); ``None`` when it must be (see :meth:`evaluate_shared`). Raises
        :class:`LimiterUnavailable` during an outage in closed mode."""
        if self.redis is None:
            return self.local.evaluate(limits)
        if self.switch.skips():
            if self.failure_mode == "closed":
                raise LimiterUnavailable(self.switch.reason or "unavailable")
            return self.local.evaluate(limits)
        return None

    async def evaluate(self, limits: Sequence[Limit]) -> Decision:
        """Decide on ``limits``; raises :class:`LimiterUnavailable` in closed mode."""
        decision = self.evaluate_now(limits)
        if decision is not None:
            return decision
        return await self.evaluate_shared(limits)

    async def evaluate_shared(self, limits: Sequence[Limit]) -> Decision:
        """Ask Redis, falling back (or refusing, in closed mode) when it fails."""
        assert self.redis is not None
        attempt = self.switch.begin()
        if attempt is not Attempt.SKIP:
            try:
                decision = await self.redis.evaluate(limits)
            except (TimeoutError, RespError, RedisError, OSError) as exc:
                self._failed(attempt, _reason(exc))
            except BaseException:
                self.switch.abandon(attempt)
                raise
            else:
                if self.switch.end(attempt, True) is Transition.RECOVERED:
                    self.emit("ratelimit.fallback", active=False, reason="recovered",
                              failure_mode=self.failure_mode)
                return decision
        if self.failure_mode == "closed":
            raise LimiterUnavailable(self.switch.reason or "unavailable")
        return self.local.evaluate(limits)

    def _failed(self, attempt: Attempt, reason: str) -> None:
        if self.switch.end(attempt, False, reason) is Transition.ACTIVATED:
            self.emit("ratelimit.fallback", active=True, reason=reason,
                      failure_mode=self.failure_mode)

    async def verify(self) -> None:
        """Load the script once (at start-up); enter the failure mode if Redis does not answer."""
        if self.redis is None:
            return
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.redis.load_script()
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(self.switch.begin(), _reason(exc))

    async def check_redis(self) -> dict[str, Any]:
        """Ping Redis within the timeout (for readiness and start-up); never raises."""
        if self.redis is None:
            return {"ok": True, "backend": "memory"}
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await self.redis.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            return {"ok": False, "error": _reason(exc)}
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}
