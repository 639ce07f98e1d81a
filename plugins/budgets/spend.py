"""The one interface every spend backend implements, and what it counts.

A budget's spend in one period is a *counter* (:class:`Counter`): the budget's id and the
period's label. Backends keep counters somewhere every replica sees:
:mod:`~plugins.budgets.redis_spend` in Redis, :mod:`~plugins.budgets.db_spend` in the
database. :class:`~plugins.budgets.ledger.Ledger` puts what this process knows in front of
the backend for when it fails; the plugin only ever talks to the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Charge", "Counter", "SpendBackend", "SpendUnavailable"]


@dataclass(frozen=True, slots=True)
class Counter:
    """The spend of budget ``budget_id`` in the period labelled ``label``.

    ``expires_at`` (Unix seconds, not part of its identity) is when the counter may be
    forgotten: a day after its period ended. ``held`` marks a counter of reservations
    (:mod:`~plugins.budgets.holds`): unlike spend, its total goes down as requests settle.
    """

    budget_id: str
    label: str
    expires_at: int = field(default=0, compare=False)
    held: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Charge:
    """``amount`` nanos to add to ``counter``."""

    counter: Counter
    amount: int


class SpendUnavailable(Exception):
    """A backend could not answer; ``reason`` is ``timeout``, ``unreachable`` or ``error``
    (a bounded label for events and readiness)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SpendBackend(Protocol):
    """Where counters live, shared by every replica."""

    #: ``redis`` or ``database``, as readiness reports it.
    name: str

    async def read(self, counters: Sequence[Counter]) -> list[int]:
        """What each counter holds (0 for one never charged); raises
        :class:`SpendUnavailable` when it cannot tell."""
        ...

    async def charge(self, charges: Sequence[Charge]) -> list[int]:
        """Add each charge to its counter; return what each counter holds afterwards, this
        charge included. Raises :class:`SpendUnavailable` when the charges were not taken."""
        ...

    async def reserve(self, charges: Sequence[Charge], counters: Sequence[Counter]
                      ) -> list[int]:
        """Add each charge to its counter, then read ``counters`` (these charges included),
        in one round trip; raises :class:`SpendUnavailable` when the backend cannot tell
        (the charges may or may not have been taken)."""
        ...

    async def check(self) -> None:
        """Return when the backend answers; raise :class:`SpendUnavailable` otherwise."""
        ...

    async def close(self) -> None:
        """Write what is still held back and release connections."""
        ...
