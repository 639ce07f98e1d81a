"""Reservations in isolation: the window, what a request holds, and the ledger's memory of
held counters while the backend is down."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from plugins.budgets.holds import (
    MAX_HOLD,
    dearest,
    held_counter,
    held_labels,
    minute,
    reservation,
    window_minutes,
)
from plugins.budgets.ledger import Memory
from plugins.budgets.spend import Charge, Counter
from plugins.prices.table import ModelPrice, PriceTable

TABLE = PriceTable("USD", None, {"meter-a": ModelPrice(Decimal(1_000_000), Decimal(2_000_000))},
                   {"meter-latest": "meter-a"})


def test_the_window_covers_the_longest_request_whatever_second_it_began() -> None:
    assert window_minutes(1800) == 31
    assert window_minutes(60) == 2
    assert window_minutes(61) == 3
    now = datetime(2026, 12, 7, 12, 0, 59, tzinfo=UTC)
    # A request that began at 11:59:00 may run until 12:00:00 with a 60 s timeout: counted.
    assert held_labels(now, 2) == [f"held~{minute(now) - 1}", f"held~{minute(now)}"]


def test_a_request_holds_its_estimated_prompt_and_its_max_tokens_or_the_default() -> None:
    # 30 bytes: 10 prompt tokens at 1 USD; output at 2 USD a token.
    assert reservation(TABLE, "meter-a", 30, 5, 1000) == (10 + 2 * 5) * 10**9
    for no_max in (None, 0, -3, "7", 2.5, True):
        assert reservation(TABLE, "meter-latest", 30, no_max, 4) == (10 + 2 * 4) * 10**9
    assert reservation(TABLE, "ghost", 30, 5, 1000) is None
    # A caller's absurd max_tokens holds a lot, but never overflows the counters.
    assert reservation(TABLE, "meter-a", 30, 10**30, 1000) == MAX_HOLD


def test_a_request_naming_no_model_holds_at_the_dearest_token_prices() -> None:
    table = PriceTable("USD", None, {
        "dear-in": ModelPrice(Decimal(5_000_000), Decimal(1_000_000)),
        "dear-out": ModelPrice(Decimal(1_000_000), Decimal(9_000_000)),
        "ocr": ModelPrice(per_1000_pages=Decimal(1))}, {})
    assert dearest(table) == ModelPrice(Decimal(5_000_000), Decimal(9_000_000))
    # 30 bytes: 10 prompt tokens at 5 USD; 4 output tokens at 9 USD: dearer than any model.
    assert reservation(table, None, 30, None, 4) == (10 * 5 + 4 * 9) * 10**9


def test_a_held_counter_is_not_a_period_and_expires_after_the_window() -> None:
    counter = held_counter("bgt_1", 1000, 31)
    assert counter == Counter("bgt_1", "held~1000")
    assert counter.held and counter.expires_at == (1000 + 32) * 60


def test_memory_keeps_the_latest_held_total_and_drops_holds_settled_during_an_outage() -> None:
    memory = Memory()
    held, spend = held_counter("bgt_1", 1000, 2), Counter("bgt_1", "2026-12-07")
    memory.remember([held, spend], [9, 9])
    memory.remember([held, spend], [4, 4])
    assert memory.totals([held, spend]) == [4, 9]
    memory.keep([Charge(held, 3), Charge(spend, 2)])
    memory.keep([Charge(held, -3)])
    assert memory.unsent == 1
    assert memory.totals([held, spend]) == [4, 11]
