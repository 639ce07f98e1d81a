"""Amounts of money as budgets keep them: whole billionths of the currency ("nanos").

Usage rows store a request's cost in billionths too (``usage_log.cost_nanos``), rounded the
same way, so a budget's spend and the ``usage`` report add up to the same amount.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["MAX_DECIMALS", "NANOS", "format_amount", "parse_amount", "to_nanos"]

NANOS = Decimal(10) ** 9
#: Decimals an operator may give a limit with (a millionth of a cent is plenty).
MAX_DECIMALS = 6
#: Counters are 64-bit signed integers in Redis and in the databases.
_LIMIT = 2 ** 63


def to_nanos(cost: Decimal) -> int:
    """``cost`` in billionths, rounded half up (as usage rows store it)."""
    return int((cost * NANOS).to_integral_value(ROUND_HALF_UP))


def parse_amount(text: str) -> int:
    """A positive amount in currency units (``12.5``) as nanos; ``ValueError`` saying why
    when it is not one (not a number, not finite, zero or negative, more than
    :data:`MAX_DECIMALS` decimals, or too large to count)."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"expected an amount such as 25 or 12.50, got {text!r}") from None
    if not amount.is_finite():
        raise ValueError(f"expected a finite amount, got {text!r}")
    if amount <= 0:
        raise ValueError(f"must be more than 0, got {text!r}")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        raise ValueError(f"at most {MAX_DECIMALS} decimals, got {text!r}")
    nanos = int(amount * NANOS)
    if nanos >= _LIMIT:
        raise ValueError(f"too large, got {text!r}")
    return nanos


def format_amount(nanos: int) -> str:
    """Nanos as a plain decimal in currency units, without trailing zeros (``12.5``)."""
    amount = (Decimal(nanos) / NANOS).normalize()
    return format(amount, "f")
