"""Retention: deleting records older than ``SIDECAR_RETENTION_DAYS`` in the background.

A conversation goes (with its entries) once its last activity is older than the cut-off,
usage rows once they were made before it, and agents once they were *deleted* before it
(active agents are configuration and stay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from plugins.persistence.records import iso_from_unix
from plugins.store.db import Database

logger = logging.getLogger("mistral_sidecar.persistence")

_DAY = 86400.0


@dataclass(frozen=True)
class Purged:
    """Rows deleted by one purge."""

    conversations: int
    entries: int
    usage: int
    agents: int


async def purge(db: Database, cutoff: float) -> Purged:
    """Delete what is older than ``cutoff`` (Unix seconds), in one transaction."""
    before = iso_from_unix(cutoff)
    async with db.transaction() as tx:
        # Entries first (there is no foreign key to cascade from their conversation).
        entries = await tx.execute(
            "DELETE FROM conversation_entries WHERE conversation_id IN "
            "(SELECT id FROM conversations WHERE updated_at < ?)", (before,))
        conversations = await tx.execute(
            "DELETE FROM conversations WHERE updated_at < ?", (before,))
        usage = await tx.execute("DELETE FROM usage_log WHERE created_at < ?", (before,))
        agents = await tx.execute(
            "DELETE FROM agents WHERE status = 'deleted' AND updated_at < ?", (before,))
    return Purged(conversations, entries, usage, agents)


class RetentionPurger:
    """Runs :func:`purge` every ``interval`` seconds for records older than ``days``."""

    def __init__(self, db: Database, days: int, interval: float, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.db = db
        self.days = days
        self.interval = interval
        self._wall = wall
        self._task: asyncio.Task[None] | None = None
        self.last: Purged | None = None

    async def run_once(self) -> Purged:
        """Purge now."""
        self.last = await purge(self.db, self._wall() - self.days * _DAY)
        if any((self.last.conversations, self.last.usage, self.last.agents)):
            logger.info("retention purge: %s", self.last)
        return self.last

    def start(self) -> None:
        """Start purging in the background (first run right away)."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        """Stop the background purge."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                # An outage: the next round tries again; nothing is lost by waiting.
                logger.warning("retention purge failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.interval)
