"""Deciding on a request from its budgets' spend: the refusal, the headers, the thresholds.

Pure functions of the budgets, what they spent and the time, so the rules read in one place:

* a hard budget whose spend reached its limit refuses the request (429 ``budget_exceeded``,
  ``Retry-After`` until its period ends); a request admitted under the cap runs to its end
  even if it takes the spend over;
* a hard budget whose spend plus what other requests in flight hold
  (:mod:`~plugins.budgets.holds`) reached its limit refuses the request too, with
  ``Retry-After: 1``: concurrent requests cannot all pass the check before any is charged;
* every request a budget applies to carries the tightest budget's ``X-Sidecar-Budget-*``
  headers, and ``X-Sidecar-Budget-Warning`` from 80 % of it on;
* a charge that takes a budget's spend to or past 80 % or 100 % of its limit crosses that
  threshold (reported once per budget and period).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from plugins.budgets.budget import ORG, Budget
from plugins.budgets.money import format_amount
from plugins.budgets.periods import Span, span
from plugins.budgets.spend import Counter
from proxy.errors import SidecarError

__all__ = ["LIMIT_HEADER", "REMAINING_HEADER", "RESET_HEADER", "SPENDING", "THRESHOLDS",
           "WARNING_HEADER", "Standing", "Told", "counter", "crossed", "headers",
           "held_refusal", "refusal"]

#: Operations that can cost money: the ones a hard budget refuses once reached. Others (lists,
#: reads, deletes, uploads) go through whatever budgets say.
SPENDING = frozenset({
    "chat.complete", "fim.complete", "embeddings.create", "agents.complete",
    "conversations.start", "conversations.start_stream", "conversations.append",
    "conversations.append_stream", "conversations.restart", "conversations.restart_stream",
    "classifiers.classify", "classifiers.classify_chat", "classifiers.moderate",
    "classifiers.moderate_chat", "ocr.process", "audio.speech.complete",
    "audio.transcriptions.complete", "audio.transcriptions.complete_stream",
    "batch.jobs.create",
})

#: Percentages of a limit whose crossing is reported.
THRESHOLDS = (80, 100)
#: From this percentage on, responses carry the warning header.
WARN_PERCENT = THRESHOLDS[0]

LIMIT_HEADER = "X-Sidecar-Budget-Limit"
REMAINING_HEADER = "X-Sidecar-Budget-Remaining"
RESET_HEADER = "X-Sidecar-Budget-Reset"
WARNING_HEADER = "X-Sidecar-Budget-Warning"


def counter(budget: Budget, now: datetime) -> tuple[Counter, Span]:
    """The counter of ``budget``'s current period, and that period."""
    current = span(budget.period, now)
    # Kept a day past its period: a request that began before midnight still finds it.
    expires = int(current.end.timestamp()) + 86_400
    return Counter(budget.id, current.label, expires), current


@dataclass(frozen=True, slots=True)
class Standing:
    """A budget, its current period and what it spent in it (nanos)."""

    budget: Budget
    span: Span
    spent: int

    @property
    def remaining(self) -> int:
        """What is left (never below 0)."""
        return max(0, self.budget.limit - self.spent)

    @property
    def reached(self) -> bool:
        """Whether the spend reached the limit."""
        return self.spent >= self.budget.limit

    @property
    def percent(self) -> int:
        """Whole percent of the limit spent (rounded down)."""
        return self.spent * 100 // self.budget.limit


def _whose(budget: Budget) -> str:
    if budget.scope == ORG:
        return f"organisation {budget.subject}"
    return budget.describe()


def refusal(standings: list[Standing], now: datetime, hidden_model: bool = False
            ) -> SidecarError | None:
    """The 429 for the hard budgets that reached their limit, ``None`` when there are none.
    ``Retry-After`` is when the last of them starts a new period. ``hidden_model``: the
    request names no model (an agent or a conversation decides it), so the caller's budgets
    on one model applied too, which the message says."""
    reached = [s for s in standings if s.budget.hard and s.reached]
    if not reached:
        return None
    retry = max(s.span.seconds_left(now) for s in reached)
    first = max(reached, key=lambda s: s.span.end)
    budget = first.budget
    on = f" on {budget.model}" if budget.model else ""
    message = (f"Budget exceeded: the {first.span.adjective} budget of "
               f"{budget.describe_limit()}{on} for {_whose(budget)} is used up. It resets at "
               f"{first.span.end.strftime('%Y-%m-%dT%H:%M:%SZ')}, in {retry} seconds.")
    if hidden_model and budget.model:
        message += (" This request names no model (its agent or conversation chooses it), "
                    "so every hard budget of the caller applies to it.")
    return SidecarError(429, message, type="rate_limit_error", code="budget_exceeded",
                        headers={"Retry-After": str(retry)})


def held_refusal(full: list[tuple[Standing, int]]) -> SidecarError:
    """The 429 for hard budgets whose spend plus what other requests hold (nanos, with each
    standing) reached their limit: the caller may retry in a second, as those requests end
    and give back what they did not spend. Names the budget with the least left."""
    first, held = min(full, key=lambda pair: pair[0].budget.limit - pair[0].spent - pair[1])
    budget = first.budget
    on = f" on {budget.model}" if budget.model else ""
    message = (f"Budget exceeded: the rest of the {first.span.adjective} budget of "
               f"{budget.describe_limit()}{on} for {_whose(budget)} is held by requests in "
               f"flight ({format_amount(held)} {budget.currency} held, "
               f"{format_amount(first.spent)} spent). Retry in a moment.")
    return SidecarError(429, message, type="rate_limit_error", code="budget_exceeded",
                        headers={"Retry-After": "1"})


def headers(standings: list[Standing], now: datetime) -> dict[str, str]:
    """The tightest budget's headers: the one with the least left (a hard one on a tie).
    Remaining is the limit less the real spend, not less what requests in flight hold: a
    hold is an upper bound that mostly goes back, and counting it would make the figure
    jump with others' traffic; a refusal for holds says so in its message."""
    tightest = min(standings, key=lambda s: (s.remaining, not s.budget.hard))
    out = {LIMIT_HEADER: format_amount(tightest.budget.limit),
           REMAINING_HEADER: format_amount(tightest.remaining),
           RESET_HEADER: str(tightest.span.seconds_left(now))}
    warned = max(standings, key=lambda s: s.percent)
    if warned.percent >= WARN_PERCENT:
        budget = warned.budget
        on = f" on {budget.model}" if budget.model else ""
        out[WARNING_HEADER] = _printable(
            f"{min(warned.percent, 100)}% of the {warned.span.adjective} {budget.mode} "
            f"budget of {budget.describe_limit()}{on} for {_whose(budget)} used")
    return out


def _printable(text: str) -> str:
    """``text`` with anything but printable ASCII replaced: header values carry names an
    operator typed."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def crossed(budget: Budget, before: int, after: int) -> list[int]:
    """The thresholds (percent) a charge taking the spend from ``before`` to ``after``
    crossed."""
    limit = budget.limit
    return [percent for percent in THRESHOLDS
            if before * 100 < limit * percent <= after * 100]


class Told:
    """The thresholds already reported, per budget, for its current period only."""

    def __init__(self) -> None:
        self._told: dict[str, tuple[str, set[int]]] = {}

    def first_time(self, budget_id: str, label: str, percent: int) -> bool:
        """Whether ``percent`` of budget ``budget_id`` in period ``label`` is reported for the
        first time (and from now on, not)."""
        told = self._told.get(budget_id)
        if told is None or told[0] != label:
            told = (label, set())
            self._told[budget_id] = told
        if percent in told[1]:
            return False
        told[1].add(percent)
        return True
