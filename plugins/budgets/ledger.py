"""The spend ledger the plugin talks to: the shared backend while it answers, else what this
process knows.

Every call to the shared backend is bounded; when one fails, the
:class:`~plugins.ratelimit.service.FallbackSwitch` (the rate limiter's) stops sending calls
to it, and after ``probe_interval`` seconds one call at a time tries it again. Meanwhile, in
``open`` mode, reads answer from memory: the last total the backend reported for each counter
plus the charges made since, so a cap already reached stays reached. In ``closed`` mode reads
raise :class:`LedgerUnavailable` (the plugin answers 503). Charges are never lost to an
outage, in either mode: they are kept and sent once the backend answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from plugins.budgets.spend import Charge, Counter, SpendBackend, SpendUnavailable
from plugins.ratelimit.service import Attempt, FallbackSwitch, Transition

__all__ = ["Ledger", "LedgerUnavailable", "Memory"]

EventSink = Callable[..., None]

logger = logging.getLogger("mistral_sidecar.budgets")


class LedgerUnavailable(Exception):
    """The shared backend is unusable and the failure mode is ``closed``."""


class Memory:
    """What this process knows of the counters: the last total the backend reported for
    each, and the charges the backend has not taken yet."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        self._known: dict[Counter, int] = {}
        self._unsent: dict[Counter, int] = {}
        self._sweep_at = 1024

    @property
    def unsent(self) -> int:
        """Counters with charges the backend has not taken yet."""
        return len(self._unsent)

    def remember(self, counters: Sequence[Counter], totals: Sequence[int]) -> None:
        """Record totals the backend reported (a spend total only grows within its period:
        an older answer arriving late does not undo a newer one; a held total goes down as
        requests settle, so the latest answer is kept, lest an outage freeze the most that
        was ever held)."""
        known = self._known
        for counter, total in zip(counters, totals, strict=True):
            if counter.held or total > known.get(counter, -1):
                known[counter] = total
        if len(known) >= self._sweep_at:
            now = self.wall()
            self._known = {c: t for c, t in known.items() if c.expires_at > now}
            self._sweep_at = max(1024, 2 * len(self._known))

    def keep(self, charges: Sequence[Charge]) -> None:
        """Hold charges the backend did not take (a hold and its settlement cancel out:
        nothing is left to send)."""
        unsent = self._unsent
        for charge in charges:
            total = unsent.get(charge.counter, 0) + charge.amount
            if total:
                unsent[charge.counter] = total
            else:
                unsent.pop(charge.counter, None)

    def take(self) -> list[Charge]:
        """Every held charge (no longer held: :meth:`keep` them again if sending fails)."""
        held, self._unsent = self._unsent, {}
        return [Charge(counter, amount) for counter, amount in held.items()]

    def known(self, counter: Counter) -> int:
        """The last total the backend reported for ``counter`` (0 when none)."""
        return self._known.get(counter, 0)

    def pending(self, counter: Counter) -> int:
        """Charges held for ``counter``."""
        return self._unsent.get(counter, 0)

    def totals(self, counters: Sequence[Counter]) -> list[int]:
        """The best estimate of each counter: last known total plus held charges."""
        return [self._known.get(c, 0) + self._unsent.get(c, 0) for c in counters]


class Ledger:
    """Reads and charges counters on ``shared``, falling back on :class:`Memory`.

    ``emit(name, **fields)`` reports ``budgets.fallback`` transitions. ``clock`` (monotonic
    seconds) paces the probes and times readiness checks.
    """

    def __init__(self, shared: SpendBackend, *, timeout: float, failure_mode: str,
                 probe_interval: float, emit: EventSink,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.shared = shared
        self.timeout = timeout
        self.failure_mode = failure_mode
        self.emit = emit
        self.clock = clock
        self.memory = Memory()
        self.switch = FallbackSwitch(probe_interval, clock)
        self._replay: asyncio.Task[None] | None = None

    @property
    def backend(self) -> str:
        """The shared backend's name, or ``fallback`` while it is unusable."""
        return "fallback" if self.switch.active else self.shared.name

    async def read(self, counters: Sequence[Counter]) -> list[int]:
        """What each counter holds; :class:`LedgerUnavailable` in closed mode while the
        shared backend is unusable."""
        totals = await self._shared(lambda: self.shared.read(counters), counters, ())
        if totals is not None:
            return totals
        if self.failure_mode == "closed":
            raise LedgerUnavailable(self.switch.reason or "unavailable")
        return self.memory.totals(counters)

    async def reserve(self, charges: Sequence[Charge], counters: Sequence[Counter]
                      ) -> list[int]:
        """Add the charges, then read ``counters`` (the charges included), in one round
        trip. While the shared backend is unusable: in open mode, the charges are held like
        any other and the read answers from memory; in closed mode nothing is kept and
        :class:`LedgerUnavailable` is raised."""
        totals = await self._shared(lambda: self.shared.reserve(charges, counters), counters,
                                    charges)
        if totals is not None:
            return totals
        if self.failure_mode == "closed":
            raise LedgerUnavailable(self.switch.reason or "unavailable")
        self.memory.keep(charges)
        return self.memory.totals(counters)

    async def charge(self, charges: Sequence[Charge]) -> list[int]:
        """Add the charges; return each counter's total afterwards (this process's estimate
        while the shared backend is unusable). Never fails: charges the backend does not
        take are held and sent when it answers again."""
        counters = [charge.counter for charge in charges]
        totals = await self._shared(lambda: self.shared.charge(charges), counters, charges)
        if totals is not None:
            return totals
        self.memory.keep(charges)
        return self.memory.totals(counters)

    async def _shared(self, call: Callable[[], Awaitable[list[int]]],
                      counters: Sequence[Counter], charges: Sequence[Charge]
                      ) -> list[int] | None:
        """What ``call`` on the shared backend says ``counters`` hold (with the charges this
        process still holds for them); ``None`` when the backend is resting after a failure
        or fails now. ``charges`` (those ``call`` makes) are held if it is interrupted."""
        attempt = self.switch.begin()
        if attempt is Attempt.SKIP:
            return None
        try:
            totals = await call()
        except SpendUnavailable as exc:
            self._failed(attempt, exc.reason)
            return None
        except BaseException:
            self.switch.abandon(attempt)
            self.memory.keep(charges)
            raise
        self._succeeded(attempt)
        self.memory.remember(counters, totals)
        return [total + self.memory.pending(c) for c, total in zip(counters, totals,
                                                                    strict=True)]

    def _failed(self, attempt: Attempt, reason: str) -> None:
        if self.switch.end(attempt, False, reason) is Transition.ACTIVATED:
            self.emit("budgets.fallback", active=True, reason=reason,
                      failure_mode=self.failure_mode)

    def _succeeded(self, attempt: Attempt) -> None:
        if self.switch.end(attempt, True) is Transition.RECOVERED:
            self.emit("budgets.fallback", active=False, reason="recovered",
                      failure_mode=self.failure_mode)
        if self.memory.unsent and (self._replay is None or self._replay.done()):
            self._replay = asyncio.get_running_loop().create_task(
                self._send_held(), name="budgets-replay")

    async def _send_held(self) -> None:
        """Send the charges held during an outage (in the background: no request waits)."""
        held = self.memory.take()
        if not held:
            return
        try:
            totals = await self.shared.charge(held)
        except SpendUnavailable as exc:
            self.memory.keep(held)
            self._failed(self.switch.begin(), exc.reason)
        except BaseException:
            self.memory.keep(held)
            raise
        else:
            self.memory.remember([charge.counter for charge in held], totals)

    async def verify(self) -> None:
        """Check the shared backend once (at start-up, waiting up to a second however short
        the timeout); enter the failure mode if it does not answer."""
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.shared.check()
        except TimeoutError:
            self._failed(self.switch.begin(), "timeout")
        except SpendUnavailable as exc:
            self._failed(self.switch.begin(), exc.reason)

    async def check_shared(self) -> dict[str, Any]:
        """Ask the shared backend within the timeout (for readiness); never raises."""
        started = self.clock()
        try:
            async with asyncio.timeout(self.timeout):
                await self.shared.check()
        except TimeoutError:
            return {"ok": False, "error": "timeout"}
        except SpendUnavailable as exc:
            return {"ok": False, "error": exc.reason}
        return {"ok": True, "latency_ms": round((self.clock() - started) * 1000, 3)}

    async def close(self) -> None:
        """Try once more to send held charges, then close the shared backend."""
        if self._replay is not None:
            await asyncio.gather(self._replay, return_exceptions=True)
        if self.memory.unsent:
            await asyncio.gather(self._send_held(), return_exceptions=True)
        if self.memory.unsent:
            logger.warning("budgets: %d spend counters had charges the %s backend never "
                           "took; they are lost with this process", self.memory.unsent,
                           self.shared.name)
        await self.shared.close()
