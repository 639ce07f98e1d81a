"""The in-process backend: GCRA buckets in this process's memory, on an injected clock.

Used when no Redis is configured, and as the fail-open fallback while Redis is unusable. Its
limits hold per process, so N replicas admit up to N times a limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from plugins.ratelimit.gcra import Decision, Limit, decide


class LocalLimiter:
    """:class:`~plugins.ratelimit.limiter.Limiter` on a dict of TATs and a monotonic ``clock``.

    Keys whose TAT has passed are swept now and then, so memory follows the number of recently
    active callers.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tats: dict[str, float] = {}
        self._sweep_at = 1024

    def __len__(self) -> int:
        return len(self._tats)

    async def evaluate(self, limits: Sequence[Limit]) -> Decision:
        """Decide on ``limits`` now and record what the decision took (never fails)."""
        now = self.clock()
        decision, updates = decide(now, [self._tats.get(limit.key) for limit in limits], limits)
        for limit, tat in zip(limits, updates, strict=True):
            if tat is not None:
                self._tats[limit.key] = tat
        if len(self._tats) >= self._sweep_at:
            self._sweep(now)
        return decision

    async def check(self) -> None:
        """Memory always answers."""

    async def close(self) -> None:
        """Nothing to release."""

    def _sweep(self, now: float) -> None:
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        self._sweep_at = max(1024, 2 * len(self._tats))
