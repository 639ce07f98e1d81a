"""The key-pool plugin: spread upstream calls over several Mistral API keys.

``MISTRAL_API_KEY`` may hold several comma-separated keys. Each request takes the next key in
round-robin order. A key that upstream answers with 429 (rate limited) or 401 (revoked,
mistyped) is cooled down for ``SIDECAR_KEYPOOL_COOLDOWN_SECONDS`` (or upstream's
``Retry-After``, at most an hour) and the same request moves on to the next key that is not
cooling. When every key is cooling the request still goes upstream with the key that recovers
first, and when the last key tried is refused too, that refusal goes to the caller unchanged:
the sidecar never invents an error of its own for this.

The pool manages only the key the core put on the request. When an authentication plugin
forwards the caller's own key instead (pass-through mode), the request is left alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.backoff import parse_retry_after
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emit
from proxy.settings import Setting

__all__ = ["COOLING_STATUSES", "KEYPOOL", "MAX_COOLDOWN_SECONDS", "KeyPool"]

#: Upstream answers that say "not with this key": rate limited, or not accepted at all.
COOLING_STATUSES = frozenset({401, 429})
#: A ``Retry-After`` longer than this is not believed (a typo must not bench a key for days).
MAX_COOLDOWN_SECONDS = 3600.0


class KeyPool:
    """Round-robin over keys, skipping those cooling down. ``clock`` is monotonic seconds;
    ``on_cooldown(index, status, seconds)`` is told whenever a key starts cooling."""

    def __init__(
        self,
        keys: list[str],
        cooldown_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_cooldown: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.keys = list(keys)
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self.on_cooldown = on_cooldown
        self._members = frozenset(self.keys)
        self._cooling_until = [0.0] * len(self.keys)
        self._next = 0

    def __len__(self) -> int:
        return len(self.keys)

    def manages(self, key: str | None) -> bool:
        """Whether ``key`` is one of the pool's keys (not a caller's own key)."""
        return key is not None and key in self._members

    def is_cooling(self, index: int) -> bool:
        """Whether key ``index`` is benched right now."""
        return self._cooling_until[index] > self.clock()

    def cooling(self) -> int:
        """How many keys are cooling down right now."""
        now = self.clock()
        return sum(1 for until in self._cooling_until if until > now)

    def pick(self, tried: set[int]) -> int | None:
        """The next key to use, in round-robin order, among keys not cooling and not yet tried
        for this request. With none left: the key that recovers first if nothing was tried
        yet, else ``None``."""
        count = len(self.keys)
        for offset in range(count):
            index = (self._next + offset) % count
            if index not in tried and not self.is_cooling(index):
                self._next = (index + 1) % count
                return index
        if tried:
            return None
        index = min(range(count), key=lambda i: self._cooling_until[i])
        self._next = (index + 1) % count
        return index

    def cool(self, index: int, status: int, retry_after: float | None) -> float:
        """Bench key ``index`` after upstream answered ``status``; returns the seconds."""
        seconds = self.cooldown_seconds if retry_after is None else retry_after
        seconds = min(seconds, MAX_COOLDOWN_SECONDS)
        self._cooling_until[index] = max(self._cooling_until[index], self.clock() + seconds)
        if self.on_cooldown is not None:
            self.on_cooldown(index, status, seconds)
        return seconds


KEYPOOL = web.AppKey("keypool_pool", KeyPool)


#: The events this plugin emits.
EVENTS = (
    EventSpec("keypool.cooldown", "An upstream key was put in cool-down.",
              fields=("key_index", "status", "seconds"), level="WARNING",
              metrics=(EventMetric("keypool_cooldowns",
                                   "Upstream keys put in cool-down, by key index and status.",
                                   ("key_index", "status")),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """How long a refused key sits out."""
    return [Setting("keypool.cooldown_seconds", "float", 60.0,
                    "How long a key upstream answered with 429 or 401 is skipped, unless "
                    "upstream's Retry-After says otherwise.",
                    deprecated_env=("SIDECAR_KEY_COOLDOWN_SECONDS",), minimum=0)]


@hookimpl
def startup(app: web.Application) -> None:
    """Build the pool from ``MISTRAL_API_KEY``."""
    settings = app[SETTINGS]

    def on_cooldown(index: int, status: int, seconds: float) -> None:
        emit(app, "keypool.cooldown", None, key_index=index, status=status,
             seconds=round(seconds, 3))

    app[KEYPOOL] = KeyPool(list(settings["upstream.api_key"]),
                           float(settings["keypool.cooldown_seconds"]),
                           on_cooldown=on_cooldown)


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall | None:
    """Choose the key for each attempt; move to the next key after a 401 or 429."""
    pool = ctx.app[KEYPOOL]
    if len(pool) < 2:
        return None

    async def pooled(ctx: RequestContext) -> UpstreamResponse:
        if not pool.manages(ctx.upstream_api_key):
            return await call(ctx)
        # A streamed body went out with the first attempt and cannot be sent again.
        replayable = ctx.body is not None or not ctx.request.body_exists
        tried: set[int] = set()
        index = pool.pick(tried)
        while index is not None:
            tried.add(index)
            ctx.upstream_api_key = pool.keys[index]
            ctx.log["upstream_key_index"] = index
            response = await call(ctx)
            if response.status not in COOLING_STATUSES:
                return response
            pool.cool(index, response.status, parse_retry_after(response.headers, time.time()))
            index = pool.pick(tried) if replayable else None
            if index is None:
                return response
            await response.release()
        raise AssertionError("pick() returns a key when nothing was tried")

    return pooled


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """Keys available and cooling down."""
    pool = app.get(KEYPOOL)
    if pool is None or not len(pool):
        return None
    cooling = pool.cooling()
    return [("keypool_keys", {"state": "cooling"}, float(cooling)),
            ("keypool_keys", {"state": "available"}, float(len(pool) - cooling))]


@hookimpl
def readiness(app: web.Application) -> dict[str, Any] | None:
    """Report how many keys are cooling; never unready (see the breaker's reasoning: the
    sidecar itself is fine, and upstream's refusals reach callers as they are)."""
    pool = app.get(KEYPOOL)
    if pool is None or len(pool) < 2:
        return None
    return {"keypool": {"ok": True, "keys": len(pool), "cooling": pool.cooling()}}
