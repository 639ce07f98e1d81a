"""Money as the sidecar stores and adds it up: whole billionths of the currency ("nanos").

A request's cost (``Usage.cost``, an exact ``Decimal``) is stored in usage rows and charged
to budgets in nanos, rounded half up the same way everywhere, so the ``usage`` report and a
budget's spend add up to the same amount. At up to three decimals per million tokens every
request's cost is a whole number of billionths, so sums over millions of requests stay exact.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["NANOS", "format_amount", "to_nanos"]

NANOS = Decimal(10) ** 9


def to_nanos(cost: Decimal) -> int:
    """``cost`` in billionths, rounded half up."""
    return int((cost * NANOS).to_integral_value(ROUND_HALF_UP))


def format_amount(nanos: int) -> str:
    """Nanos as a plain decimal in currency units, without trailing zeros (``12.5``)."""
    return format((Decimal(nanos) / NANOS).normalize(), "f")
