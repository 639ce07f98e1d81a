"""The in-process store: a least-recently-used map with a time to live per entry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from plugins.cache.entry import Entry

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """At most ``max_entries`` entries, each until its time to live on ``clock`` (monotonic
    seconds) runs out; the least recently used goes first when a new one needs room."""

    name = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Entry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> Entry | None:
        """The live entry under ``key`` (now the most recently used), else ``None``."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, entry = found
        if expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def store(self, key: str, entry: Entry, ttl: float) -> None:
        """Keep ``entry`` under ``key`` for ``ttl`` seconds, evicting the least recently
        used entries beyond ``max_entries``."""
        if self.max_entries <= 0 or ttl <= 0:
            return
        self._entries[key] = (self.clock() + ttl, entry)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, key: str) -> Entry | None:
        """:meth:`lookup`, as the :class:`~plugins.cache.backend.Backend` protocol asks."""
        return self.lookup(key)

    async def put(self, key: str, entry: Entry, ttl: float) -> None:
        """:meth:`store`, as the :class:`~plugins.cache.backend.Backend` protocol asks."""
        self.store(key, entry, ttl)

    async def health(self) -> dict[str, Any]:
        """Always usable; reports how many entries it holds."""
        return {"ok": True, "entries": len(self._entries)}

    async def close(self) -> None:
        """Nothing to release."""
        self._entries.clear()
