"""The budgets plugin: spending caps per key, owner, organisation and model, per UTC day or
month, shared by every replica.

An operator sets budgets with ``mistral-sidecar budgets set`` (:mod:`.commands`); they live
in the ``budgets`` table, which every replica re-reads every ``budgets.refresh_seconds``
(:mod:`.book`). A budget applies to a request when its subject is the caller's key, owner or
organisation and it is on every model or on the model the request names.

* **Before a request** (``on_request``, for operations that can cost money): the spend of
  every budget that applies is read in one round trip; a *hard* budget whose spend reached its
  limit refuses the request with 429 ``budget_exceeded`` and ``Retry-After`` until its period
  ends, so it never goes upstream. Every such request carries the tightest budget's
  ``X-Sidecar-Budget-Limit``, ``-Remaining`` and ``-Reset`` headers, and
  ``X-Sidecar-Budget-Warning`` from 80 % on (:mod:`.enforce`).
* **Reservations**: so that requests running together cannot all pass that check before any
  is charged, a request a priced hard budget applies to *holds* what it may cost (its
  prompt estimated from its body, ``max_tokens`` or ``budgets.reserve_output_tokens`` of
  output) in the same round trip as the read, on held counters apart from the spend
  (:mod:`.holds`). It is refused (429 ``budget_exceeded``, ``Retry-After: 1``) when the
  spend plus what *other* requests hold reached the limit, and then gives its hold back at
  once. Holds count for ``ceil(upstream.total_timeout_seconds / 60) + 1`` minutes at most:
  one a killed replica never settled stops blocking the budget after that.
* **After it** (``on_end``, whatever the outcome): the request gives its hold back and, in
  the same call, what it cost, as the prices plugin set it on ``ctx.usage.cost`` (streams
  from the usage of their last event; a cached answer costs nothing), is charged to every
  budget applying to the model that answered. A charge that
  takes a budget to 80 % or 100 % of its limit reports ``budgets.threshold`` (a log line with
  the logs plugin, a counter with metrics). A request whose cost is unknown (its model has no
  price) is not charged: the first such request per model says so (``budgets.uncharged``).

Spend is kept per budget and period in Redis when ``redis.host`` is set
(:mod:`.redis_spend`), else in the database (:mod:`.db_spend`), behind a ledger that serves
from memory while the backend fails (``budgets.failure_mode`` ``open``) or answers 503
(``closed``) (:mod:`.ledger`).

``budgets list`` shows each budget's spend this period, and ``mistral-sidecar usage`` the same
after its table (``usage_report_sections``), from one function (:mod:`.commands`).

Needs ``store``, ``auth`` and ``prices`` before it in the chain.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from plugins.budgets.backends import hold_window, redis_timeout, spend_backend
from plugins.budgets.book import BudgetBook
from plugins.budgets.budget import Budget
from plugins.budgets.db_spend import DatabaseSpend
from plugins.budgets.enforce import (
    SPENDING,
    WARNING_HEADER,
    Standing,
    Told,
    counter,
    crossed,
    headers,
    held_refusal,
    refusal,
)
from plugins.budgets.holds import dearest, held_counter, minute, reservation, window_start
from plugins.budgets.ledger import Ledger, LedgerUnavailable
from plugins.budgets.money import format_amount, to_nanos
from plugins.budgets.periods import Clock, utc_now
from plugins.budgets.spend import Charge, Counter
from plugins.prices import PRICES
from plugins.prices.charging import answered_model
from plugins.prices.table import ModelPrice, PriceTable
from plugins.store import DATABASE
from plugins.store.db import Database
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import Identity, RequestContext
from proxy.errors import SidecarError
from proxy.event_registry import EventMetric, EventSpec, Label, LevelWhen
from proxy.events import emit, emitter
from proxy.hookspecs import UsageSection
from proxy.settings import Setting, Settings

__all__ = ["BUDGETS", "EVENTS", "BudgetState"]

logger = logging.getLogger("mistral_sidecar.budgets")

#: Budgets are read from the store's database, apply to the identity auth establishes, and
#: charge the cost prices sets (which must end each request first).
requires = ("store", "auth", "prices")

Report = Callable[[RequestContext | None, dict[str, Any]], None]


@dataclass(slots=True)
class BudgetState:
    """Everything the plugin keeps on the application."""

    book: BudgetBook
    ledger: Ledger
    failure_mode: str
    wall: Clock
    report_threshold: Report | None
    report_exceeded: Report | None
    report_uncharged: Report | None
    #: The prices reservations are estimated with.
    table: PriceTable
    #: Minutes a hold counts for (:func:`~plugins.budgets.holds.window_minutes`).
    window: int
    #: Output tokens a request without ``max_tokens`` holds.
    reserve_output_tokens: int
    #: Whether a model without a price is refused to callers a hard budget applies to.
    refuse_unpriced: bool
    #: The table's dearest token prices: what a request naming no model holds at.
    dearest: ModelPrice
    told: Told = field(default_factory=Told)
    #: Models (and reasons) already reported as not charged.
    uncharged: set[tuple[str, str]] = field(default_factory=set)


BUDGETS = web.AppKey("budgets_state", BudgetState)

#: ``ctx.state`` key of the holds a request made (a list of :class:`Charge`), until settled.
HELD_STATE = "budgets.held"

_MODE = Label("mode", field="hard", values={True: "hard", False: "soft"})

#: The events this plugin emits.
EVENTS = (
    EventSpec("budgets.threshold", "A charge took a budget's spend to or past 80 % or 100 % of "
              "its limit (once per budget and period).",
              fields=("budget_id", "scope", "subject", "model", "period", "period_start",
                      "percent", "hard", "limit", "spent", "currency"),
              level="WARNING",
              metrics=(EventMetric("budget_thresholds", "Budget thresholds crossed, by scope, "
                                   "period, percent (80, 100) and mode (hard, soft).",
                                   ("scope", "period", "percent", _MODE)),)),
    EventSpec("budgets.exceeded", "A request was refused: a hard budget that applies to it "
              "reached its limit.", fields=("budget_id", "scope", "period", "retry_after"),
              metrics=(EventMetric("budget_refusals", "Requests refused by a hard budget, by "
                                   "scope and period.", ("scope", "period")),)),
    EventSpec("budgets.fallback", "The spend backend became unusable (active: spend served "
              "from memory, or refused in closed mode) or usable again.",
              fields=("active", "reason", "failure_mode"),
              levels=(LevelWhen("active", "WARNING"),),
              metrics=(EventMetric("budget_fallbacks", "Times the spend backend became "
                                   "unusable.", when="active"),)),
    EventSpec("budgets.uncharged", "A request a budget applies to was not charged: its cost "
              "is unknown (no price for its model) or in another currency (told once per "
              "model and reason).", fields=("model", "reason"), level="WARNING"),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """How often budgets are re-read, and what a failing spend backend means."""
    return [
        Setting("budgets.refresh_seconds", "float", 2.0,
                "How often every replica re-reads the budgets table (a budget set or cleared "
                "applies everywhere within this time) and, without Redis, writes its charges "
                "to the database and reads the other replicas'.", minimum=0.05),
        Setting("budgets.failure_mode", "str", "open",
                "When the spend backend (Redis, else the database) fails: 'open' serves "
                "from what this replica knows (caps it saw reached stay reached), 'closed' "
                "answers 503 to requests a budget applies to.", choices=("open", "closed")),
        Setting("budgets.probe_interval_seconds", "float", 1.0,
                "While the spend backend is failing, how often one request tries it again.",
                minimum=0.01),
        Setting("budgets.unpriced_models", "str", "refuse",
                "A request for a model the price table does not know, from a caller a hard "
                "budget applies to: 'refuse' (403 model_unpriced: its cost could not be "
                "charged, so the cap would not hold) or 'allow' (it goes through uncharged, "
                "told once per model). Callers without a hard budget are never refused.",
                choices=("refuse", "allow")),
        Setting("budgets.reserve_output_tokens", "int", 1000,
                "Output tokens a request without max_tokens is assumed to generate until it "
                "reports its usage: while it runs, a hard budget holds what its prompt and "
                "that output would cost, so concurrent requests cannot overshoot the cap.",
                minimum=0),
    ]


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``mistral-sidecar budgets set|list|clear``."""
    from plugins.budgets.commands import register

    register(subparsers)


@hookimpl
def usage_report_sections(settings: Settings, db: Database, owner: str | None
                          ) -> Awaitable[list[UsageSection] | None]:
    """``mistral-sidecar usage``: the budgets in force (with ``--owner``, that owner's and
    its keys') with their spend this period, as ``budgets list`` shows them."""
    from plugins.budgets.commands import usage_sections

    return usage_sections(settings, db, owner)


# --- lifecycle -------------------------------------------------------------------------------


@hookimpl
def startup(app: web.Application) -> Awaitable[None]:
    """Read the budgets (without waiting long for the database: a replica that cannot read
    them starts knowing none), open the spend backend, start the background refreshes."""

    async def start() -> None:
        settings = app[SETTINGS]
        pricer = app.get(PRICES)
        if pricer is None:
            raise RuntimeError("the budgets plugin needs the prices plugin before it")
        aliases = pricer.table.aliases
        db_timeout = float(settings["db.timeout_seconds"])
        book = BudgetBook(app[DATABASE], lambda model: aliases.get(model, model),
                          refresh_interval=float(settings["budgets.refresh_seconds"]),
                          timeout=db_timeout)
        if not await book.refresh():
            logger.warning("budgets: started without reading the budgets table; no budget "
                           "applies until it can be read (failure mode %s)",
                           settings["budgets.failure_mode"])
        backend = spend_backend(settings, app[DATABASE])
        ledger = Ledger(backend,
                        timeout=redis_timeout(settings) if backend.name == "redis" else db_timeout,
                        failure_mode=str(settings["budgets.failure_mode"]),
                        probe_interval=float(settings["budgets.probe_interval_seconds"]),
                        emit=lambda name, **fields: emit(app, name, **fields))
        if isinstance(backend, DatabaseSpend):
            await backend.sync()
            backend.start()
        await ledger.verify()
        book.start()
        app[BUDGETS] = BudgetState(
            book, ledger, str(settings["budgets.failure_mode"]), utc_now,
            report_threshold=emitter(app, "budgets.threshold"),
            report_exceeded=emitter(app, "budgets.exceeded"),
            report_uncharged=emitter(app, "budgets.uncharged"),
            table=pricer.table, window=hold_window(settings),
            reserve_output_tokens=int(settings["budgets.reserve_output_tokens"]),
            refuse_unpriced=settings["budgets.unpriced_models"] == "refuse",
            dearest=dearest(pricer.table))
        logger.info("budgets: %d budgets, spend in %s", len(book.index), backend.name)

    return start()


@hookimpl
def shutdown(app: web.Application) -> Awaitable[None] | None:
    """Stop refreshing; send the charges still held back; close connections."""
    state = app.get(BUDGETS)
    if state is None:
        return None

    async def stop() -> None:
        await state.book.close()
        await state.ledger.close()

    return stop()


@hookimpl
def readiness(app: web.Application) -> Awaitable[dict[str, Any]] | None:
    """``budgets``: the spend backend in use, how many budgets apply; not ok only in closed
    mode while the backend fails or the budgets were never read."""
    state = app.get(BUDGETS)
    if state is None:
        return None

    async def check() -> dict[str, Any]:
        ledger = state.ledger
        shared = await ledger.check_shared()
        usable = shared["ok"] and state.book.loaded
        return {"budgets": {
            "ok": usable or state.failure_mode == "open",
            "backend": ledger.backend, "failure_mode": state.failure_mode,
            "budgets": len(state.book.index), "read": state.book.loaded,
            "stale": state.book.failing, "spend": shared,
            "held_charges": ledger.memory.unsent}}

    return check()


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """``budgets_fallback_active`` (1 while the spend backend is unusable) and
    ``budgets_defined`` (budgets in force on this replica)."""
    state = app.get(BUDGETS)
    if state is None:
        return None
    return [("budgets_fallback_active", {}, 1.0 if state.ledger.switch.active else 0.0),
            ("budgets_defined", {}, float(len(state.book.index)))]


# --- one request -----------------------------------------------------------------------------


def _requested_model(ctx: RequestContext) -> str | None:
    body = ctx.json
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


def _unavailable(ctx: RequestContext, state: BudgetState) -> SidecarError:
    ctx.log["budget"] = "unavailable"
    retry = max(1, round(state.ledger.switch.probe_interval))
    return SidecarError(503, "Budgets are temporarily unavailable; retry shortly.",
                        type="service_unavailable", code="budget_unavailable",
                        headers={"Retry-After": str(retry)})


@hookimpl
def on_request(ctx: RequestContext) -> Awaitable[None] | None:
    """Refuse a request a reached hard budget applies to; add the budget headers."""
    state = ctx.app.get(BUDGETS)
    identity = ctx.identity
    if state is None or identity is None or ctx.operation_name not in SPENDING:
        return None
    if not state.book.loaded and state.failure_mode == "closed":
        raise _unavailable(ctx, state)
    index = state.book.index
    if not index:
        return None
    candidates = index.candidates(identity)
    if not candidates:
        return None
    # Parsing the body is the costliest step of a pass-through: only for a model budget or
    # a hard one.
    hard = any(budget.hard for budget, _ in candidates)
    model = _requested_model(ctx) if hard or any(m for _, m in candidates) else None
    if model is None and hard:
        # An agent or a conversation decides the model once the request runs: every hard
        # budget of the caller applies, those on one model included.
        budgets = [budget for budget, _ in candidates]
        return _check(ctx, state, budgets, hidden_model=True)
    budgets = index.select(candidates, model)
    if not budgets:
        return None
    if model is not None and state.refuse_unpriced and state.table.price_of(model) is None \
            and any(budget.hard for budget in budgets):
        raise _unpriced(ctx, model)
    return _check(ctx, state, budgets)


def _unpriced(ctx: RequestContext, model: str) -> SidecarError:
    """The refusal of a model without a price to a caller a hard budget applies to: what it
    costs could not be charged, so the cap would not hold."""
    ctx.log["budget"] = "unpriced_model"
    return SidecarError(
        403, f"A hard budget applies to this request, and model {model!r} has no price in "
        "the sidecar's price table, so its cost could not be counted against it. Use a "
        "priced model, or ask the operator to add a price for this one.",
        type="permission_error", code="model_unpriced")


async def _check(ctx: RequestContext, state: BudgetState, budgets: list[Budget],
                 hidden_model: bool = False) -> None:
    now = state.wall()
    periods = [counter(budget, now) for budget in budgets]
    # Spend only grows within a period: a hard budget last seen reached is refused as it
    # always was, on a plain read, without holding and giving back.
    memory = state.ledger.memory
    reached = any(b.hard and memory.known(c) >= b.limit for b, (c, _) in zip(
        budgets, periods, strict=True))
    holds = [] if reached else _holds(ctx, state, budgets, now)
    try:
        if holds:
            # Kept before the call: a request cancelled meanwhile still gives them back.
            ctx.state[HELD_STATE] = holds
            totals = await state.ledger.reserve(
                holds, [c for c, _ in periods] + _window(state, holds, now))
        else:
            totals = await state.ledger.read([c for c, _ in periods])
    except LedgerUnavailable:
        ctx.state.pop(HELD_STATE, None)
        raise _unavailable(ctx, state) from None
    standings = [Standing(budget, current, total)
                 for budget, (_, current), total in zip(budgets, periods, totals[:len(budgets)],
                                                        strict=True)]
    shown = headers(standings, now)
    ctx.response_headers.update(shown)
    if WARNING_HEADER in shown:
        ctx.log["budget"] = "warning"
    refused = refusal(standings, now, hidden_model)
    if refused is not None:
        await _give_back(ctx, state)
        ctx.log["budget"] = "exceeded"
        _report_refusal(ctx, state, [(s, s.span.seconds_left(now))
                                     for s in standings if s.budget.hard and s.reached])
        raise refused
    full = _held_full(standings, holds, totals[len(budgets):], state.window)
    if full:
        await _give_back(ctx, state)
        ctx.log["budget"] = "held"
        _report_refusal(ctx, state, [(standing, 1) for standing, _ in full])
        raise held_refusal(full)


def _holds(ctx: RequestContext, state: BudgetState, budgets: list[Budget],
           now: datetime) -> list[Charge]:
    """What the request holds on each hard budget in the price table's currency; nothing
    when none applies or its cost cannot be estimated (no price, free, not JSON)."""
    table = state.table
    hard = [b for b in budgets if b.hard and b.currency == table.currency]
    body = ctx.json if hard else None
    if not isinstance(body, dict):
        return []
    model = body.get("model")
    if not isinstance(model, str) or not model:
        # The agent or conversation chooses the model: held at the dearest prices.
        model = None
    amount = reservation(table, model, len(ctx.body or b""), body.get("max_tokens"),
                         state.reserve_output_tokens, state.dearest)
    if not amount:
        return []
    at = minute(now)
    return [Charge(held_counter(b.id, at, state.window), amount) for b in hard]


def _window(state: BudgetState, holds: list[Charge], now: datetime) -> list[Counter]:
    """The held counters that count now, ``state.window`` per hold's budget."""
    first = window_start(now, state.window)
    return [held_counter(hold.counter.budget_id, at, state.window)
            for hold in holds for at in range(first, first + state.window)]


def _held_full(standings: list[Standing], holds: list[Charge], held: list[int],
               window: int) -> list[tuple[Standing, int]]:
    """The budgets held whose spend plus what the *other* requests hold reached the limit,
    each with that held amount."""
    by_budget = {s.budget.id: s for s in standings}
    full = []
    for i, hold in enumerate(holds):
        standing = by_budget[hold.counter.budget_id]
        others = sum(held[i * window:(i + 1) * window]) - hold.amount
        if standing.spent + others >= standing.budget.limit:
            full.append((standing, others))
    return full


async def _give_back(ctx: RequestContext, state: BudgetState) -> None:
    """Give a refused request's holds back (at once: it never runs)."""
    holds: list[Charge] | None = ctx.state.pop(HELD_STATE, None)
    if holds:
        await state.ledger.charge([Charge(h.counter, -h.amount) for h in holds])


def _report_refusal(ctx: RequestContext, state: BudgetState,
                    refusing: list[tuple[Standing, int]]) -> None:
    """``budgets.exceeded`` for each budget refusing, with the ``Retry-After`` it asks."""
    report = state.report_exceeded
    if report is None:
        return
    for standing, retry in refusing:
        report(ctx, {"budget_id": standing.budget.id, "scope": standing.budget.scope,
                     "period": standing.budget.period, "retry_after": retry})


@hookimpl
def on_end(ctx: RequestContext) -> Awaitable[None] | None:
    """Give back what the request held and charge what it cost to every budget applying to
    the model that answered, in one call."""
    state = ctx.app.get(BUDGETS)
    identity = ctx.identity
    if state is None or identity is None:
        return None
    # Whatever the outcome (refused by a later plugin, failed, cut short): settled here.
    holds: list[Charge] = ctx.state.pop(HELD_STATE, None) or []
    if not holds and not state.book.index:
        # No budget in force (the common deployment): nothing to settle or charge.
        return None
    spend = _cost(ctx, state, identity)
    if spend is None and not holds:
        return None
    budgets, amount = spend or ([], 0)
    return _settle(ctx, state, budgets, amount, holds)


def _cost(ctx: RequestContext, state: BudgetState, identity: Identity
          ) -> tuple[list[Budget], int] | None:
    """The budgets to charge and what the request cost (nanos), ``None`` when nothing is to
    be charged."""
    index = state.book.index
    candidates = index.candidates(identity)
    usage = ctx.usage if candidates else None
    if usage is None:
        return None
    model = answered_model(ctx)
    cost = usage.cost
    if cost is None:
        if usage.total_tokens or usage.pages or usage.audio_seconds:
            _uncharged(ctx, state, index.select(candidates, model), model, "unpriced")
        return None
    amount = to_nanos(cost)
    if amount <= 0:
        return None
    budgets = index.select(candidates, model)
    other = [b for b in budgets if b.currency != usage.currency]
    if other:
        _uncharged(ctx, state, other, model, "currency")
        budgets = [b for b in budgets if b.currency == usage.currency]
    if not budgets:
        return None
    return budgets, amount


def _uncharged(ctx: RequestContext, state: BudgetState, budgets: list[Budget],
               model: str | None, reason: str) -> None:
    if not budgets:
        return
    ctx.log["budget"] = "not_charged"
    told = (model or "", reason)
    if told in state.uncharged or len(state.uncharged) >= 1000:
        return
    state.uncharged.add(told)
    if state.report_uncharged is not None:
        state.report_uncharged(ctx, {"model": model, "reason": reason})


async def _settle(ctx: RequestContext, state: BudgetState, budgets: list[Budget],
                  amount: int, holds: list[Charge]) -> None:
    now = state.wall()
    periods = [counter(budget, now) for budget in budgets]
    # The spend first: a reader between the two sees the cost and the hold, never neither.
    totals = await state.ledger.charge([Charge(c, amount) for c, _ in periods]
                                       + [Charge(h.counter, -h.amount) for h in holds])
    report = state.report_threshold
    for budget, (spent_counter, _), total in zip(budgets, periods, totals[:len(budgets)],
                                                 strict=True):
        for percent in crossed(budget, total - amount, total):
            if not state.told.first_time(budget.id, spent_counter.label, percent):
                continue
            if report is not None:
                report(ctx, {"budget_id": budget.id, "scope": budget.scope,
                             "subject": budget.subject, "model": budget.model or None,
                             "period": budget.period, "period_start": spent_counter.label,
                             "percent": percent, "hard": budget.hard,
                             "limit": format_amount(budget.limit),
                             "spent": format_amount(total),
                             "currency": budget.currency})
