"""Counters in the database, for sidecars without Redis: written behind, read in the
background, so that no request ever waits for the database.

Charges are added in memory at once (the next request on this replica sees them) and written
every ``interval`` seconds in one batch of upserts (``spent_nanos = spent_nanos +
excluded.spent_nanos``: atomic, so replicas writing together lose nothing); the same round
then reads the current day's and month's counters back, charges of other replicas included.
A request reads what that round found plus this replica's charges since: other replicas'
charges show after at most two rounds, which bounds how far a fleet sharing one database can
overshoot a cap. Held counters (:mod:`~plugins.budgets.holds`) are rows like any other;
a round reads those of the window back too, and about once a minute deletes the older ones
(settled, they hold nothing). When a round fails, the backend says so (the ledger then serves from
memory, or refuses in closed mode) and keeps the charges for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from plugins.budgets.holds import HELD, held_labels, window_start
from plugins.budgets.periods import Clock, current_labels, utc_now
from plugins.budgets.spend import Charge, Counter, SpendUnavailable
from plugins.store.db import Database, DatabaseUnavailable, Row
from plugins.store.deadline import within

__all__ = ["DatabaseSpend"]

logger = logging.getLogger("mistral_sidecar.budgets")

_UPSERT = ("INSERT INTO budget_spend (budget_id, period_start, spent_nanos) VALUES (?, ?, ?) "
           "ON CONFLICT (budget_id, period_start) DO UPDATE SET "
           "spent_nanos = budget_spend.spent_nanos + excluded.spent_nanos")
_READ = "SELECT budget_id, period_start, spent_nanos FROM budget_spend WHERE period_start IN "
#: Held labels are ``held~`` and a minute of as many digits as now's (until the 22nd century):
#: as text they sort as the minutes do.
_PRUNE = "DELETE FROM budget_spend WHERE period_start LIKE ? AND period_start < ?"
#: Seconds between two deletions of held rows that left the window.
_PRUNE_EVERY = 60.0


def _add(into: dict[Counter, int], amounts: dict[Counter, int]) -> None:
    for counter, amount in amounts.items():
        into[counter] = into.get(counter, 0) + amount


class DatabaseSpend:
    """:class:`~plugins.budgets.spend.SpendBackend` on the store's database (see the module
    docstring). ``timeout`` bounds each write and read; ``wall`` says which periods are
    current; ``window`` is how many minutes of held counters count."""

    name = "database"

    def __init__(self, db: Database, *, interval: float, timeout: float,
                 wall: Clock = utc_now, window: int = 1) -> None:
        self.db = db
        self.interval = interval
        self.timeout = timeout
        self.wall = wall
        self.window = window
        #: When held rows that left the window were last deleted (``wall`` seconds).
        self._pruned = 0.0
        #: What the last successful read found.
        self._view: dict[Counter, int] = {}
        #: Written since that read (the next read includes them).
        self._written: dict[Counter, int] = {}
        #: Being written now.
        self._sending: dict[Counter, int] = {}
        #: Not written yet.
        self._pending: dict[Counter, int] = {}
        #: Why the last round failed; ``None`` while rounds succeed.
        self.failing: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Counters with charges not yet written."""
        return len(self._pending) + len(self._sending)

    def _total(self, counter: Counter) -> int:
        return (self._view.get(counter, 0) + self._written.get(counter, 0)
                + self._sending.get(counter, 0) + self._pending.get(counter, 0))

    def _refuse_while_failing(self) -> None:
        if self.failing is not None:
            raise SpendUnavailable(self.failing, "the database did not answer the last round")

    async def read(self, counters: Sequence[Counter]) -> list[int]:
        """What each counter holds as far as this replica knows (never waits)."""
        self._refuse_while_failing()
        return [self._total(counter) for counter in counters]

    async def charge(self, charges: Sequence[Charge]) -> list[int]:
        """Count the charges now; the next round writes them."""
        self._refuse_while_failing()
        for charge in charges:
            self._pending[charge.counter] = self._pending.get(charge.counter, 0) + charge.amount
        return [self._total(charge.counter) for charge in charges]

    async def reserve(self, charges: Sequence[Charge], counters: Sequence[Counter]
                      ) -> list[int]:
        """Count the charges now, then read ``counters`` as :meth:`read` does."""
        await self.charge(charges)
        return [self._total(counter) for counter in counters]

    async def check(self) -> None:
        """Fails while the last round failed."""
        self._refuse_while_failing()

    def start(self) -> None:
        """Run a round every ``interval`` seconds from now on."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="budgets-spend")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sync()

    async def sync(self) -> bool:
        """One round: write the pending charges, then read the current periods back.
        Returns whether both succeeded."""
        batch, self._pending = self._pending, {}
        if batch:
            self._sending = batch
            try:
                await within(self._write(batch), self.timeout)
            except Exception as exc:
                # Not known to be written: charged again next round (a write that committed
                # but whose answer was lost counts twice: over the cap, never under).
                self._sending = {}
                _add(self._pending, batch)
                self._failed(exc)
                return False
            self._sending = {}
            _add(self._written, batch)
        try:
            rows = await within(self._read(), self.timeout)
        except Exception as exc:
            self._failed(exc)
            return False
        # The read began after every write counted in _written had committed.
        self._view = {Counter(str(row["budget_id"]), str(row["period_start"])):
                      int(row["spent_nanos"]) for row in rows}
        self._written = {}
        if self.failing is not None:
            logger.info("budgets: the database answers again; spend is shared again")
            self.failing = None
        await self._prune()
        return True

    async def _prune(self) -> None:
        """Delete the held rows that left the window, about once a minute (a failure waits
        for the next time: they count for nothing meanwhile)."""
        now = self.wall()
        if now.timestamp() - self._pruned < _PRUNE_EVERY:
            return
        self._pruned = now.timestamp()
        oldest = f"{HELD}{window_start(now, self.window)}"
        try:
            await within(self.db.execute(_PRUNE, (f"{HELD}%", oldest)), self.timeout)
        except Exception as exc:
            logger.debug("budgets: deleting old held rows failed: %s", exc)

    async def _write(self, batch: dict[Counter, int]) -> None:
        await self.db.executemany(_UPSERT, [(counter.budget_id, counter.label, amount)
                                            for counter, amount in batch.items()])

    async def _read(self) -> list[Row]:
        now = self.wall()
        labels = [*current_labels(now), *held_labels(now, self.window)]
        marks = ", ".join("?" * len(labels))
        return await self.db.fetchall(f"{_READ}({marks})", labels)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, TimeoutError):
            reason = "timeout"
        elif isinstance(exc, DatabaseUnavailable | OSError):
            reason = "unreachable"
        else:
            reason = "error"
            logger.error("budgets: reading or writing spend failed", exc_info=exc)
        if self.failing is None:
            logger.warning("budgets: the database did not answer (%s); spend is served from "
                           "memory and charges are kept until it is back", reason)
        self.failing = reason

    async def close(self) -> None:
        """Stop the rounds and write what is pending, once more."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await self.sync()
        if self._pending:
            logger.warning("budgets: %d spend counters could not be written at shutdown",
                           len(self._pending))
