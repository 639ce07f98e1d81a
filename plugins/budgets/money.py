"""Amounts of money as budgets keep them: whole billionths of the currency, as usage rows
do (:mod:`proxy.money`); limits as operators write them."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from proxy.money import NANOS, format_amount, to_nanos

__all__ = ["MAX_DECIMALS", "NANOS", "format_amount", "parse_amount", "to_nanos"]

#: Decimals an operator may give a limit with (a millionth of a cent is plenty).
MAX_DECIMALS = 6
#: Counters are 64-bit signed integers in Redis and in the databases.
_LIMIT = 2 ** 63


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
