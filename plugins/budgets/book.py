"""The budgets in force on this replica: the ``budgets`` table, re-read in the background.

Every ``refresh_interval`` seconds the whole table is read again (it holds one row per
budget an operator set), so a budget set or cleared with the CLI applies on every replica
within that time. A read that fails keeps the budgets last read; a replica that has never
read them (the database unreachable since it started) knows of none (:attr:`loaded` says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from plugins.budgets.budget import Budget, BudgetIndex
from plugins.budgets.definitions import load_all
from plugins.store.db import Database
from plugins.store.deadline import within
from proxy.context import Identity

__all__ = ["BudgetBook"]

logger = logging.getLogger("mistral_sidecar.budgets")


class BudgetBook:
    """The budgets of ``db``'s table, with model names made canonical by ``canonical``."""

    def __init__(self, db: Database, canonical: Callable[[str], str], *,
                 refresh_interval: float, timeout: float) -> None:
        self.db = db
        self.canonical = canonical
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self.index = BudgetIndex((), canonical)
        #: Whether the table was read at least once.
        self.loaded = False
        #: Whether the last read failed.
        self.failing = False
        self._task: asyncio.Task[None] | None = None

    def applying(self, identity: Identity, model: str | None) -> list[Budget]:
        """The budgets that apply to ``identity`` calling ``model``."""
        return self.index.applying(identity, model)

    async def refresh(self) -> bool:
        """Read the table again; on failure keep what was read before. Returns whether the
        read succeeded."""
        try:
            budgets = await within(load_all(self.db), self.timeout)
        except Exception as exc:
            if not self.failing:
                logger.warning("budgets: cannot read the budgets table (%s); keeping the %d "
                               "budgets read before", type(exc).__name__, len(self.index))
            self.failing = True
            return False
        self.index = BudgetIndex(budgets, self.canonical)
        if self.failing:
            logger.info("budgets: the budgets table can be read again")
        self.loaded, self.failing = True, False
        return True

    def start(self) -> None:
        """Refresh in the background from now on."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="budgets-book")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self.refresh()

    async def close(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
