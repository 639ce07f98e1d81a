"""Work gathered during one event-loop round and done together at its end.

Code that runs once per finished request (the access line, the metrics' bookkeeping) costs
several times its instructions in a busy sidecar: between two requests the rest of the
request path evicts its code and data from the processor's caches, so every request fetches
them again. A :class:`RoundBatch` collects the items of the requests that finish in one round
of the event loop and hands them over in one call at its end, so that the code and its state
are fetched once per round instead of once per request, while nothing is held longer than
the round (no request waits, and the garbage collector never sees the items).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["RoundBatch"]

T = TypeVar("T")


class RoundBatch(Generic[T]):
    """Collects items and calls ``handle`` with all of them at the end of the current
    event-loop round (``loop.call_soon``), or at once when there is no loop.

    ``handle`` must not raise: it runs as a loop callback, where an exception would be
    reported by the loop and the rest of the batch lost.
    """

    __slots__ = ("handle", "items", "loop")

    def __init__(self, handle: Callable[[list[T]], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.handle = handle
        self.loop = loop
        self.items: list[T] = []

    def add(self, item: T) -> None:
        """Queue ``item``; the first item of a round schedules the hand-over."""
        items = self.items
        items.append(item)
        if len(items) == 1:
            loop = self.loop
            if loop is None or loop.is_closed():
                self.drain()
            else:
                loop.call_soon(self.drain)

    def drain(self) -> None:
        """Hand over every queued item now (the scheduled call then finds none)."""
        items = self.items
        if items:
            self.items = []
            self.handle(items)
