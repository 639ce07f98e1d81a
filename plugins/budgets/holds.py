"""Reservations: what requests in flight may still cost, held against hard budgets.

A hard budget is checked before a request and charged after it, so requests running
together would all pass the check before any of them is charged. Each admitted request
therefore *holds* what it may cost (:func:`reservation`) on a counter of its own kind, apart
from the spend: the spend counters, thresholds, ``budgets list``, ``usage`` and the admin
API keep meaning real spend.

A held counter is an ordinary :class:`~plugins.budgets.spend.Counter` labelled
``held~<minute>`` (``minute`` = Unix seconds // 60 when the hold was made), so every spend
backend keeps it like any other. It is not tied to a period: a request charges the period in
which it ends, so a request in flight at midnight must hold the new day's budget too. A
request settles its hold when it ends (a negative charge on the same counter); one that never
does (its replica was killed) stops counting once its minute leaves the *window*: admission
adds up the last ``window`` minutes only, and no request lives longer than
``upstream.total_timeout_seconds``.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from plugins.budgets.money import to_nanos
from plugins.budgets.spend import Counter
from plugins.prices.table import ModelPrice, PriceTable
from proxy.context import Usage
from proxy.estimate import estimate_tokens

__all__ = ["HELD", "MAX_HOLD", "dearest", "held_counter", "held_labels", "minute", "reservation",
           "window_minutes", "window_start"]

#: What every held counter's label starts with (never a period's label).
HELD = "held~"
#: The most one request holds (about a million currency units): a caller's absurd
#: ``max_tokens`` must not overflow the 64-bit counters many holds add up on.
MAX_HOLD = 2 ** 50
_MINUTE = 60


def window_minutes(total_timeout: float) -> int:
    """How many minutes of holds admission adds up: enough to cover the longest request
    (``total_timeout`` seconds) whatever second of its minute it began in."""
    return math.ceil(total_timeout / _MINUTE) + 1


def minute(now: datetime) -> int:
    """The minute a hold made at ``now`` is counted in."""
    return int(now.timestamp()) // _MINUTE


def window_start(now: datetime, window: int) -> int:
    """The oldest minute whose holds still count at ``now``."""
    return minute(now) - window + 1


def held_counter(budget_id: str, at: int, window: int) -> Counter:
    """The counter of ``budget_id``'s holds made in minute ``at``; it may be forgotten a
    minute after it left the window."""
    return Counter(budget_id, f"{HELD}{at}", (at + window + 1) * _MINUTE, held=True)


def held_labels(now: datetime, window: int) -> list[str]:
    """The labels of the held counters that count at ``now``."""
    first = window_start(now, window)
    return [f"{HELD}{at}" for at in range(first, first + window)]


def reservation(table: PriceTable, model: str | None, body_bytes: int, max_tokens: object,
                output_tokens: int, dearest_price: ModelPrice | None = None) -> int | None:
    """What a request may cost, in nanos: its prompt as :func:`~proxy.estimate.
    estimate_tokens` estimates it from its body, and ``max_tokens`` tokens of output when it
    is a positive int, else ``output_tokens``; at most :data:`MAX_HOLD`. ``None`` when
    ``model`` has no price (such a request is not charged either). A request that names no
    ``model`` (an agent or a conversation chooses it) is held at ``dearest_price`` (the
    table's :func:`dearest`): whichever model answers, it cannot cost more per token."""
    prompt, _ = estimate_tokens(body_bytes, 0, 0)
    output = max_tokens if type(max_tokens) is int and max_tokens > 0 else output_tokens
    usage = Usage(prompt, output, prompt + output)
    if model is None:
        cost: Decimal | None = (dearest_price or dearest(table)).cost(usage)
    else:
        cost = table.cost(model, usage)
    return None if cost is None else min(to_nanos(cost), MAX_HOLD)


def dearest(table: PriceTable) -> ModelPrice:
    """The highest input and output token prices of any model in ``table`` (each on its
    own): a price no model's tokens exceed."""
    inputs = [p.input for p in table.models.values() if p.input is not None]
    outputs = [p.output for p in table.models.values() if p.output is not None]
    return ModelPrice(input=max(inputs, default=Decimal(0)),
                      output=max(outputs, default=Decimal(0)))
