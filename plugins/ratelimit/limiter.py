"""The one limiter interface every backend implements, as Envoy's ratelimit has one cache
interface for its Redis and memcached backends.

A backend keeps GCRA buckets somewhere (:mod:`~plugins.ratelimit.local_limiter`: this
process's memory; :mod:`~plugins.ratelimit.redis_limiter`: Redis, shared by every replica) and
decides on a request's limits in one atomic step. :class:`~plugins.ratelimit.service.RateLimiter`
puts a shared backend in front of the in-process one and chooses between them; the plugin only
ever talks to that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from plugins.ratelimit.gcra import Decision, Limit


class BackendUnavailable(Exception):
    """A backend could not decide; ``reason`` is ``timeout``, ``unreachable`` or ``error``
    (a bounded label for events and readiness)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Limiter(Protocol):
    """Where buckets live and how a decision on them is made."""

    async def evaluate(self, limits: Sequence[Limit]) -> Decision:
        """Decide on ``limits`` together (all pass, or none takes anything) and record what
        the decision took; raises :class:`BackendUnavailable` when it cannot decide."""
        ...

    async def check(self) -> None:
        """Return when the backend answers; raise :class:`BackendUnavailable` otherwise."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (connections)."""
        ...
