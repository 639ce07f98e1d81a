"""What the plugin needs of a place to keep answers, whatever it is."""

from __future__ import annotations

from typing import Any, Protocol

from plugins.cache.entry import Entry

__all__ = ["Backend", "BackendUnavailable"]


class BackendUnavailable(Exception):
    """The store did not answer in time or at all; ``reason`` is ``timeout``,
    ``unreachable``, ``error`` or ``resting`` (not tried: it failed a moment ago)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Backend(Protocol):
    """A key-value store of :class:`Entry`, each kept for a time to live."""

    #: ``memory`` or ``redis``, for readiness and events.
    name: str

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, ``None`` when absent or expired; raises
        :class:`BackendUnavailable`."""
        ...

    async def put(self, key: str, entry: Entry, ttl: float) -> None:
        """Keep ``entry`` under ``key`` for ``ttl`` seconds; raises
        :class:`BackendUnavailable`."""
        ...

    async def health(self) -> dict[str, Any]:
        """For ``/readyz``: ``{"ok": bool, ...}``, without secrets."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
