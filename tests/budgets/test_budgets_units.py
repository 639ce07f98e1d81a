"""The arithmetic under budgets: calendar periods in UTC, amounts in billionths, which
budgets apply to whom, and when a charge crosses a threshold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from plugins.budgets.budget import KEY, ORG, OWNER, Budget, BudgetIndex
from plugins.budgets.enforce import Standing, Told, crossed, headers, refusal
from plugins.budgets.money import format_amount, parse_amount, to_nanos
from plugins.budgets.periods import DAY, MONTH, span
from proxy.context import Identity


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("now", "period", "label", "end"), [
    ("2025-12-07T13:45:00", DAY, "2025-12-07", "2025-12-08T00:00:00"),
    ("2025-12-31T23:59:59", DAY, "2025-12-31", "2026-01-01T00:00:00"),
    ("2025-12-31T23:59:59", MONTH, "2025-12", "2026-01-01T00:00:00"),
    ("2024-02-29T00:00:00", MONTH, "2024-02", "2024-03-01T00:00:00"),
    ("2024-02-28T12:00:00", DAY, "2024-02-28", "2024-02-29T00:00:00"),
    ("2025-01-31T10:00:00", MONTH, "2025-01", "2025-02-01T00:00:00"),
])
def test_periods_are_utc_calendar_days_and_months(now: str, period: str, label: str,
                                                  end: str) -> None:
    current = span(period, at(now))
    assert (current.label, current.end) == (label, at(end))
    assert current.start <= at(now) < current.end


def test_a_period_is_the_utc_one_whatever_the_zone_of_the_time() -> None:
    # 00:30 in Paris on the 1st is still the last day of the previous month in UTC.
    paris = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert span(DAY, paris).label == "2025-12-31"
    assert span(MONTH, paris).label == "2025-12"


def test_seconds_left_round_up_and_never_reach_zero() -> None:
    current = span(DAY, at("2025-12-07T23:59:59.2"))
    assert current.seconds_left(at("2025-12-07T23:59:59.2")) == 1
    assert current.seconds_left(at("2025-12-07T00:00:00")) == 86_400
    assert current.seconds_left(at("2025-12-08T00:00:00")) == 1


@pytest.mark.parametrize(("text", "nanos"), [
    ("12.5", 12_500_000_000), ("0.000001", 1000), ("1e3", 1_000_000_000_000),
    (" 7 ", 7_000_000_000), ("2.500000", 2_500_000_000),
])
def test_amounts_are_exact_billionths(text: str, nanos: int) -> None:
    assert parse_amount(text) == nanos


@pytest.mark.parametrize("text", ["0", "-1", "NaN", "inf", "abc", "", "0.0000001",
                                  "1e30"])
def test_amounts_that_are_no_limit_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_costs_round_half_up_to_billionths_like_usage_rows() -> None:
    assert to_nanos(Decimal("0.0000000015")) == 2
    assert to_nanos(Decimal("0.0000000014")) == 1
    assert format_amount(12_500_000_000) == "12.5"
    assert format_amount(0) == "0"
    assert format_amount(1) == "0.000000001"


def budget(scope: str, subject: str, *, owner_org: str = "", model: str = "",
           limit: int = 10, hard: bool = True, period: str = DAY,
           budget_id: str = "b") -> Budget:
    return Budget(budget_id, scope, subject, owner_org, model, period, limit, "USD", hard, 0.0)


def test_budgets_apply_by_key_owner_in_its_org_or_any_org_and_organisation() -> None:
    index = BudgetIndex([
        budget(KEY, "k1", budget_id="key"),
        budget(OWNER, "alice", budget_id="alice-anywhere"),
        budget(OWNER, "alice", owner_org="acme", budget_id="alice-acme"),
        budget(OWNER, "alice", owner_org="beta", budget_id="alice-beta"),
        budget(ORG, "acme", budget_id="acme"),
        budget(ORG, "acme", model="mistral-large-2411", budget_id="acme-large"),
    ], canonical=lambda m: {"mistral-large-latest": "mistral-large-2411"}.get(m, m))
    alice = Identity(key_id="k1", owner="alice", role="user", org="acme")
    assert [b.id for b in index.applying(alice, "mistral-small")] == [
        "key", "alice-anywhere", "alice-acme", "acme"]
    # One model by two names: the alias the price table gives.
    assert [b.id for b in index.applying(alice, "mistral-large-latest")][-1] == "acme-large"
    assert [b.id for b in index.applying(alice, None)] == [
        "key", "alice-anywhere", "alice-acme", "acme"]
    stranger = Identity(key_id="k9", owner="alice", role="user", org="gamma")
    assert [b.id for b in index.applying(stranger, "x")] == ["alice-anywhere"]


def test_the_request_at_the_cap_is_refused_until_the_period_ends() -> None:
    now = at("2025-12-07T18:00:00")
    hard = budget(OWNER, "alice", limit=9, budget_id="day")
    below = [Standing(hard, span(DAY, now), 8)]
    assert refusal(below, now) is None
    at_cap = [Standing(hard, span(DAY, now), 9)]
    error = refusal(at_cap, now)
    assert error is not None
    assert (error.status, error.type, error.code) == (429, "rate_limit_error",
                                                      "budget_exceeded")
    assert error.headers == {"Retry-After": str(6 * 3600)}
    assert error.message == ("Budget exceeded: the daily budget of 0.000000009 USD for owner "
                             "alice is used up. It resets at 2025-12-08T00:00:00Z, in 21600 "
                             "seconds.")
    # Day and month both reached: back only when the month is.
    month = budget(ORG, "acme", limit=5, period=MONTH, budget_id="month")
    both = [*at_cap, Standing(month, span(MONTH, now), 7)]
    error = refusal(both, now)
    assert error is not None and error.headers["Retry-After"] == str(24 * 86_400 + 6 * 3600)
    # A soft budget over its limit refuses nothing.
    soft = budget(OWNER, "alice", limit=9, hard=False)
    assert refusal([Standing(soft, span(DAY, now), 90)], now) is None


def test_headers_show_the_tightest_budget_and_warn_from_80_percent() -> None:
    now = at("2025-12-07T23:00:00")
    roomy = Standing(budget(ORG, "acme", limit=100_000_000_000), span(DAY, now), 0)
    tight = Standing(budget(KEY, "k1", limit=10_000_000_000, hard=False), span(DAY, now),
                     8_500_000_000)
    assert headers([roomy, tight], now) == {
        "X-Sidecar-Budget-Limit": "10", "X-Sidecar-Budget-Remaining": "1.5",
        "X-Sidecar-Budget-Reset": "3600",
        "X-Sidecar-Budget-Warning": "85% of the daily soft budget of 10 USD for key k1 used"}


def test_thresholds_are_crossed_once_and_told_once_per_period() -> None:
    limit = budget(KEY, "k1", limit=10)
    assert crossed(limit, 0, 7) == []
    assert crossed(limit, 7, 8) == [80]
    assert crossed(limit, 7, 10) == [80, 100]
    assert crossed(limit, 8, 12) == [100]
    assert crossed(limit, 10, 12) == []
    told = Told()
    assert told.first_time("b", "2025-12-07", 80) is True
    assert told.first_time("b", "2025-12-07", 80) is False
    assert told.first_time("b", "2025-12-08", 80) is True
