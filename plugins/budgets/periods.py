"""Budget periods: calendar days and months in UTC.

A budget's spend is counted per period and starts again from nothing when the next one
begins. Each period has a label (``2025-12-07`` for a day, ``2025-12`` for a month) that names
its counter; the two shapes never collide, so one query can ask for both current periods.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["DAY", "MONTH", "PERIODS", "Clock", "Span", "current_labels", "span", "utc_now"]

DAY = "day"
MONTH = "month"
PERIODS = (DAY, MONTH)

#: Wall-clock time as an aware UTC ``datetime`` (injected, so tests choose the moment).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Span:
    """One period: its kind (``day`` or ``month``), label, first instant and the first
    instant of the next one."""

    period: str
    label: str
    start: datetime
    end: datetime

    def seconds_left(self, now: datetime) -> int:
        """Whole seconds from ``now`` until the next period begins (at least 1): what a
        caller refused for this period waits."""
        return max(1, math.ceil((self.end - now).total_seconds()))

    @property
    def adjective(self) -> str:
        """``daily`` or ``monthly``, for messages."""
        return "daily" if self.period == DAY else "monthly"


def span(period: str, now: datetime) -> Span:
    """The ``period`` (``day`` or ``month``) that contains ``now`` (any time zone; periods
    are UTC)."""
    now = now.astimezone(UTC)
    if period == DAY:
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return Span(DAY, start.strftime("%Y-%m-%d"), start, start + timedelta(days=1))
    if period == MONTH:
        start = datetime(now.year, now.month, 1, tzinfo=UTC)
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        return Span(MONTH, start.strftime("%Y-%m"), start, datetime(year, month, 1, tzinfo=UTC))
    raise ValueError(f"unknown budget period {period!r}")


def current_labels(now: datetime) -> tuple[str, str]:
    """The labels of the day and of the month that contain ``now``."""
    return span(DAY, now).label, span(MONTH, now).label
