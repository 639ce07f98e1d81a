"""The concurrency plugin: caps on in-flight upstream requests, per sidecar and per caller.

A request takes a slot before it goes upstream and holds it until its response has ended (a
stream until its last frame, a cancelled request until the sidecar notices). When the caps are
reached, requests wait in one bounded FIFO queue for up to
``SIDECAR_CONCURRENCY_QUEUE_TIMEOUT_SECONDS``; a full queue or a wait that runs out gets 503
with ``Retry-After``. A caller waiting for its own per-key slot never holds up other callers
waiting for the sidecar-wide one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web

from plugins.ratelimit.caller import caller_id
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext
from proxy.errors import SidecarError
from proxy.event_registry import EventMetric, EventSpec, Label
from proxy.events import emit
from proxy.settings import Setting

__all__ = ["POOL", "Rejected", "Slot", "SlotPool"]

_STATE = "concurrency"
RETRY_AFTER_SECONDS = 1


class Rejected(Exception):
    """No slot: ``reason`` is ``queue_full`` or ``timeout``; ``scope`` is ``sidecar`` or
    ``key`` (which cap was in the way)."""

    def __init__(self, reason: str, scope: str) -> None:
        super().__init__(f"{reason} ({scope})")
        self.reason = reason
        self.scope = scope


class Slot:
    """One in-flight permit; :meth:`release` is idempotent, so every exit path may call it."""

    __slots__ = ("key", "pool", "released")

    def __init__(self, pool: SlotPool, key: str) -> None:
        self.pool = pool
        self.key = key
        self.released = False

    def release(self) -> None:
        """Give the permit back (handing it to the first waiter, if any)."""
        if not self.released:
            self.released = True
            self.pool._release_total()
            self.pool._release_key(self.key)


class SlotPool:
    """Permits for ``max_total`` requests in flight (0 = no cap) and ``max_per_key`` per caller
    (0 = no cap), with at most ``queue_size`` requests waiting.

    A freed permit goes straight to the longest waiter, so a newcomer cannot overtake the queue.
    """

    def __init__(self, max_total: int, max_per_key: int, queue_size: int) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self.queue_size = queue_size
        self.inflight = 0
        self.waiting = 0
        self._per_key: dict[str, int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._key_waiters: dict[str, deque[asyncio.Future[None]]] = {}

    def key_inflight(self, key: str) -> int:
        """Requests of ``key`` in flight (counted only when a per-key cap is set)."""
        return self._per_key.get(key, 0)

    def try_acquire(self, key: str) -> Slot | None:
        """A permit right now without waiting, or ``None``."""
        if self._key_free(key) and self._total_free():
            self._take_key(key)
            self.inflight += 1
            return Slot(self, key)
        return None

    async def acquire(self, key: str, max_wait: float) -> Slot:
        """A permit, waiting up to ``max_wait`` seconds in the queue; raises :class:`Rejected`."""
        slot = self.try_acquire(key)
        if slot is not None:
            return slot
        scope = "sidecar" if self._key_free(key) else "key"
        if self.waiting >= self.queue_size:
            raise Rejected("queue_full", scope)
        self.waiting += 1
        have_key = False
        try:
            async with asyncio.timeout(max_wait):
                if self._key_free(key):
                    self._take_key(key)
                else:
                    queue = self._key_waiters.setdefault(key, deque())
                    await self._wait(queue, lambda: self._release_key(key))
                have_key = True
                scope = "sidecar"
                if self._total_free():
                    self.inflight += 1
                else:
                    await self._wait(self._waiters, self._release_total)
        except TimeoutError:
            if have_key:
                self._release_key(key)
            raise Rejected("timeout", scope) from None
        except BaseException:
            if have_key:
                self._release_key(key)
            raise
        finally:
            self.waiting -= 1
            self._forget_empty(key)
        return Slot(self, key)

    @staticmethod
    async def _wait(queue: deque[asyncio.Future[None]], give_back: Callable[[], None]) -> None:
        future = asyncio.get_running_loop().create_future()
        queue.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                give_back()  # the permit arrived just as this waiter gave up: pass it on
            else:
                future.cancel()
                with contextlib.suppress(ValueError):  # a release may have skipped it already
                    queue.remove(future)
            raise

    def _key_free(self, key: str) -> bool:
        if self.max_per_key <= 0:
            return True
        return self._per_key.get(key, 0) < self.max_per_key and not self._key_waiters.get(key)

    def _total_free(self) -> bool:
        return self.max_total <= 0 or (self.inflight < self.max_total and not self._waiters)

    def _take_key(self, key: str) -> None:
        if self.max_per_key > 0:
            self._per_key[key] = self._per_key.get(key, 0) + 1

    def _release_key(self, key: str) -> None:
        if self.max_per_key <= 0:
            return
        if _hand_over(self._key_waiters.get(key)):
            self._forget_empty(key)
            return
        count = self._per_key.get(key, 0) - 1
        if count > 0:
            self._per_key[key] = count
        else:
            self._per_key.pop(key, None)

    def _forget_empty(self, key: str) -> None:
        queue = self._key_waiters.get(key)
        if queue is not None and not queue:
            del self._key_waiters[key]

    def _release_total(self) -> None:
        if not _hand_over(self._waiters):
            self.inflight -= 1


def _hand_over(queue: deque[asyncio.Future[None]] | None) -> bool:
    while queue:
        future = queue.popleft()
        if not future.done():
            future.set_result(None)
            return True
    return False


POOL = web.AppKey("concurrency_pool", SlotPool)
"""The app's :class:`SlotPool`."""
QUEUE_TIMEOUT = web.AppKey("concurrency_queue_timeout", float)


#: Seconds a request may wait for a slot: from none to the longest queue timeout.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0)


def _queue_wait(outcome: str) -> EventMetric:
    """How long a request waited that then got a slot (``admitted``) or none."""
    return EventMetric("queue_wait_seconds", "Time requests waited for a concurrency slot, "
                       "by outcome (admitted, rejected).", (Label("outcome", fixed=outcome),),
                       observe="waited_s", buckets=QUEUE_WAIT_BUCKETS)


#: The events this plugin emits.
EVENTS = (
    EventSpec("concurrency.rejected", "A request got no concurrency slot.",
              fields=("scope", "waited_s", "reason"), level="WARNING",
              metrics=(EventMetric("concurrency_rejections",
                                   "Requests refused for lack of a concurrency slot, by scope.",
                                   ("scope",)),
                       _queue_wait("rejected"))),
    # Only requests that queued: one that found a slot free reports nothing.
    EventSpec("concurrency.admitted", "A request got a concurrency slot after waiting.",
              fields=("waited_s",), level="DEBUG",
              metrics=(_queue_wait("admitted"),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Caps and queue."""
    return [
        Setting("concurrency.max_inflight", "int", 256,
                "Most requests this sidecar has in flight upstream at once (0 = no cap).",
                deprecated_env=("SIDECAR_MAX_INFLIGHT",), minimum=0),
        Setting("concurrency.max_inflight_per_key", "int", 0,
                "Most requests one caller has in flight at once (0 = no cap).",
                deprecated_env=("SIDECAR_MAX_INFLIGHT_PER_KEY",), minimum=0),
        Setting("concurrency.queue_size", "int", 512,
                "Most requests waiting for a slot; beyond it requests get 503 at once.",
                deprecated_env=("SIDECAR_QUEUE_SIZE",), minimum=0),
        Setting("concurrency.queue_timeout_seconds", "float", 10.0,
                "Longest wait for a slot before 503.",
                deprecated_env=("SIDECAR_QUEUE_TIMEOUT_SECONDS",), minimum=0),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Create the pool."""
    settings = app[SETTINGS]
    app[POOL] = SlotPool(int(settings["concurrency.max_inflight"]),
                         int(settings["concurrency.max_inflight_per_key"]),
                         int(settings["concurrency.queue_size"]))
    app[QUEUE_TIMEOUT] = float(settings["concurrency.queue_timeout_seconds"])


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """``inflight_requests`` and ``queue_waiting``."""
    pool = app.get(POOL)
    if pool is None:
        return None
    return [("inflight_requests", {}, float(pool.inflight)),
            ("queue_waiting", {}, float(pool.waiting))]


@hookimpl
def on_request(ctx: RequestContext) -> Awaitable[None] | None:
    """Take a slot, waiting in the queue if need be; 503 when none comes."""
    pool = ctx.app[POOL]
    key = caller_id(ctx) if pool.max_per_key > 0 else ""
    slot = pool.try_acquire(key)
    if slot is not None:
        _hold(ctx, slot)
        return None
    return _wait_for_slot(ctx, pool, key)


async def _wait_for_slot(ctx: RequestContext, pool: SlotPool, key: str) -> None:
    started = time.monotonic()
    try:
        slot = await pool.acquire(key, ctx.app[QUEUE_TIMEOUT])
    except Rejected as rejected:
        waited = round(time.monotonic() - started, 3)
        emit(ctx.app, "concurrency.rejected", ctx, scope=rejected.scope, waited_s=waited,
             reason=rejected.reason)
        ctx.log["concurrency"] = rejected.reason
        what = "this caller's" if rejected.scope == "key" else "the sidecar's"
        message = (f"Too many requests in flight: {what} queue is full."
                   if rejected.reason == "queue_full" else
                   f"Too many requests in flight: no slot within {waited:g} seconds.")
        raise SidecarError(503, message, type="service_unavailable", code="overloaded",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    waited = round(time.monotonic() - started, 3)
    ctx.log["queued_s"] = waited
    _hold(ctx, slot)
    emit(ctx.app, "concurrency.admitted", ctx, waited_s=waited)


def _hold(ctx: RequestContext, slot: Slot) -> None:
    ctx.state[_STATE] = slot
    # A safety net for exits that run no completion hook (another plugin answering itself,
    # an unexpected exception): the request's task ending always gives the slot back.
    task = asyncio.current_task()
    if task is not None:
        task.add_done_callback(lambda _task: slot.release())


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """The request ended (answered, refused, broken or abandoned): give the slot back."""
    _release(ctx)


def _release(ctx: RequestContext) -> None:
    slot = ctx.state.get(_STATE)
    if slot is not None:
        slot.release()
