"""The ``budgets`` table: reading budgets, setting and clearing them (SQL for both dialects).

Replicas read the whole table now and then (:mod:`plugins.budgets.book`); the CLI writes it.
Setting a budget that exists (same scope, subject, owner organisation, model and period)
replaces its limit and mode and keeps its id, and so the spend counted against it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from plugins.budgets.budget import Budget
from plugins.store.db import Database, Row

__all__ = ["delete", "load_all", "matching", "save"]

_COLUMNS = ("id, scope, subject, owner_org, model, period, limit_nanos, currency, hard, "
            "created_at")


def _budget(row: Row) -> Budget:
    return Budget(id=str(row["id"]), scope=str(row["scope"]), subject=str(row["subject"]),
                  owner_org=str(row["owner_org"]), model=str(row["model"]),
                  period=str(row["period"]), limit=int(row["limit_nanos"]),
                  currency=str(row["currency"]), hard=bool(row["hard"]),
                  created_at=float(row["created_at"]))


async def load_all(db: Database) -> list[Budget]:
    """Every budget, oldest first."""
    rows = await db.fetchall(f"SELECT {_COLUMNS} FROM budgets ORDER BY created_at, id")
    return [_budget(row) for row in rows]


async def save(db: Database, *, scope: str, subject: str, owner_org: str, model: str,
               period: str, limit: int, currency: str, hard: bool) -> Budget:
    """Create the budget, or replace the limit, currency and mode of the one with the same
    scope, subject, owner organisation, model and period; return it as stored."""
    key = (scope, subject, owner_org, model, period)
    async with db.transaction() as tx:
        await tx.execute(
            f"INSERT INTO budgets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, subject, owner_org, model, period) DO UPDATE SET "
            "limit_nanos = excluded.limit_nanos, currency = excluded.currency, "
            "hard = excluded.hard",
            (new_id(), *key, limit, currency, hard, time.time()))
        row = await tx.fetchone(
            f"SELECT {_COLUMNS} FROM budgets WHERE scope = ? AND subject = ? "
            "AND owner_org = ? AND model = ? AND period = ?", key)
    assert row is not None
    return _budget(row)


async def matching(db: Database, *, budget_id: str | None = None, scope: str | None = None,
                   subject: str | None = None, owner_org: str | None = None,
                   model: str | None = None, period: str | None = None) -> list[Budget]:
    """The budgets matching every filter given (``None``: any)."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("id", budget_id), ("scope", scope), ("subject", subject),
                          ("owner_org", owner_org), ("model", model), ("period", period)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await db.fetchall(f"SELECT {_COLUMNS} FROM budgets{clause} ORDER BY created_at, id",
                             params)
    return [_budget(row) for row in rows]


async def delete(db: Database, ids: Sequence[str]) -> None:
    """Delete the budgets ``ids`` and the spend the database kept for them."""
    async with db.transaction() as tx:
        for budget_id in ids:
            await tx.execute("DELETE FROM budget_spend WHERE budget_id = ?", (budget_id,))
            await tx.execute("DELETE FROM budgets WHERE id = ?", (budget_id,))


def new_id() -> str:
    """A fresh budget id (``bgt_`` and ten hex digits)."""
    return "bgt_" + secrets.token_hex(5)
