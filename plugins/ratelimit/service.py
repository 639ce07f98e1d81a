"""Choosing the backend for each decision: the shared one when it answers, else the fallback.

Every call to the shared backend (Redis) is bounded by a tight timeout. When one fails, the
:class:`FallbackSwitch` stops sending decisions to it; in ``open`` mode they go to the
in-process backend, in ``closed`` mode they are refused. After ``probe_interval`` seconds one
decision at a time tries the shared backend again, and the first success ends the fallback.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from typing import Any

from plugins.ratelimit.gcra import Decision, Limit
from plugins.ratelimit.limiter import BackendUnavailable, Limiter
from plugins.ratelimit.local_limiter import LocalLimiter

EventSink = Callable[..., None]


class Transition(enum.Enum):
    """What an attempt's outcome did to the switch."""

    NONE = "none"
    ACTIVATED = "activated"
    RECOVERED = "recovered"


class Attempt(enum.Enum):
    """How a decision should use the shared backend."""

    NORMAL = "normal"
    PROBE = "probe"
    SKIP = "skip"


class FallbackSwitch:
    """Tracks whether the shared backend is usable, on an injected clock.

    ``begin`` says whether to try it now; ``end`` records how it went and reports a
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

    def begin(self) -> Attempt:
        """Whether to try the shared backend for the next decision (at most one probe at a time)."""
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
    """The shared backend is unusable and the failure mode is ``closed``."""


class RateLimiter:
    """The :class:`~plugins.ratelimit.limiter.Limiter` the plugin uses: ``shared`` (Redis)
    while it answers, else the in-process backend (``open``) or :class:`LimiterUnavailable`
    (``closed``).

    ``shared`` is ``None`` for the in-process backend only. ``emit(name, **fields)`` reports
    ``ratelimit.fallback`` transitions. ``clock`` (monotonic seconds) drives the in-process
    buckets, the probe interval and the latency readiness reports.
    """

    def __init__(
        self,
        shared: Limiter | None,
        *,
        timeout: float,
        failure_mode: str,
        probe_interval: float,
        emit: EventSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.timeout = timeout
        self.failure_mode = failure_mode
        self.emit = emit
        self.clock = clock
        self.local = LocalLimiter(clock)
        self.switch = FallbackSwitch(probe_interval, clock)

    @property
    def backend(self) -> str:
        """``redis``, ``memory`` (no Redis configured) or ``fallback`` (Redis unusable)."""
        if self.shared is None:
            return "memory"
        return "fallback" if self.switch.active else "redis"

    async def evaluate(self, limits: Sequence[Limit]) -> Decision:
        """Decide on ``limits``; raises :class:`LimiterUnavailable` in closed mode while the
        shared backend is unusable."""
        shared = self.shared
        if shared is None:
            return await self.local.evaluate(limits)
        attempt = self.switch.begin()
        if attempt is not Attempt.SKIP:
            try:
                decision = await shared.evaluate(limits)
            except BackendUnavailable as exc:
                self._failed(attempt, exc.reason)
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
        return await self.local.evaluate(limits)

    def _failed(self, attempt: Attempt, reason: str) -> None:
        if self.switch.end(attempt, False, reason) is Transition.ACTIVATED:
            self.emit("ratelimit.fallback", active=True, reason=reason,
                      failure_mode=self.failure_mode)

    async def verify(self) -> None:
        """Check the shared backend once (at start-up, waiting up to a second however short
        the timeout); enter the failure mode if it does not answer."""
        if self.shared is None:
            return
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.shared.check()
        except TimeoutError:
            self._failed(self.switch.begin(), "timeout")
        except BackendUnavailable as exc:
            self._failed(self.switch.begin(), exc.reason)

    async def check_shared(self) -> dict[str, Any]:
        """Ping the shared backend within the timeout (for readiness); never raises."""
        if self.shared is None:
            return {"ok": True, "backend": "memory"}
        started = self.clock()
        try:
            async with asyncio.timeout(self.timeout):
                await self.shared.check()
        except TimeoutError:
            return {"ok": False, "error": "timeout"}
        except BackendUnavailable as exc:
            return {"ok": False, "error": exc.reason}
        return {"ok": True, "latency_ms": round((self.clock() - started) * 1000, 3)}

    async def close(self) -> None:
        """Close the shared backend."""
        if self.shared is not None:
            await self.shared.close()
