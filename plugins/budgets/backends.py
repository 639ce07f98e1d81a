"""Choosing the spend backend from the settings: Redis when ``redis.host`` is set, else the
database. The sidecar and the ``budgets list`` command read spend from the same place."""

from __future__ import annotations

from plugins.budgets.db_spend import DatabaseSpend
from plugins.budgets.holds import window_minutes
from plugins.budgets.redis_spend import RedisSpend
from plugins.budgets.spend import SpendBackend
from plugins.store.db import Database
from proxy.settings import Settings

__all__ = ["hold_window", "redis_timeout", "spend_backend"]


def redis_timeout(settings: Settings) -> float:
    """The longest wait for a Redis call, in seconds (``redis.timeout_ms``)."""
    return int(settings["redis.timeout_ms"]) / 1000


def hold_window(settings: Settings) -> int:
    """Minutes a reservation counts for (:func:`~plugins.budgets.holds.window_minutes` of
    ``upstream.total_timeout_seconds``)."""
    return window_minutes(float(settings["upstream.total_timeout_seconds"]))


def spend_backend(settings: Settings, db: Database, *,
                  timeout: float | None = None) -> SpendBackend:
    """The backend the settings name; ``timeout`` replaces ``redis.timeout_ms`` (a command
    line can wait longer than a request): Redis when ``redis.host`` is set, else the
    database."""
    host = settings["redis.host"]
    if host:
        wait = redis_timeout(settings) if timeout is None else timeout
        return RedisSpend(str(host), int(settings["redis.port"]), str(settings["redis.prefix"]),
                          timeout=wait, password=str(settings["redis.password"]),
                          db=int(settings["redis.db"]),
                          connect_timeout=max(wait, 1.0))
    return DatabaseSpend(db, interval=float(settings["budgets.refresh_seconds"]),
                         timeout=float(settings["db.timeout_seconds"]),
                         window=hold_window(settings))
