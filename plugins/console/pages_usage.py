"""``/admin/usage``: the organisation's requests, tokens and cost per day and model (charts
and a table) and per owner, from the admin API's usage report.

Days are UTC days, as the API counts them. Without dates the page shows the last 30 days.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from plugins.console.api import ApiError
from plugins.console.charts import colours, number, stacked_bars
from plugins.console.markup import Html, field, fill, join, notice, table
from plugins.console.web import Visit

DEFAULT_DAYS = 30
#: Longest stretch of days drawn as bars one by one (beyond it, only days with usage).
MAX_CHART_DAYS = 400
_NO_MODEL = "(no model)"

_FILTER = """
<form class="filters" method="get" action="/admin/usage">
$since $until $owner $model <button type="submit">Show</button>
</form>
"""


def _today() -> date:
    return datetime.now(UTC).date()


def _days(since: str, until: str, found: set[str]) -> list[str]:
    """Every day from ``since`` to ``until`` when both are dates and not too far apart; else
    the days that have usage."""
    try:
        first, last = date.fromisoformat(since), date.fromisoformat(until)
    except ValueError:
        return sorted(found)
    if first > last or (last - first).days >= MAX_CHART_DAYS:
        return sorted(found)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _cost(row: dict[str, Any]) -> Decimal | None:
    try:
        return None if row.get("cost") is None else Decimal(str(row["cost"]))
    except InvalidOperation:
        return None


def _summary(rows: list[dict[str, Any]]) -> Html:
    requests = sum(int(r["requests"]) for r in rows)
    errors = sum(int(r["errors"]) for r in rows)
    tokens = sum(int(r["total_tokens"]) for r in rows)
    unpriced = sum(int(r.get("unpriced") or 0) for r in rows)
    costs: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        cost = _cost(row)
        if cost is not None and row.get("currency"):
            costs[row["currency"]] += cost
    cost_text = ", ".join(f"{number(v)} {c}" for c, v in sorted(costs.items())) or "—"
    items = [("Requests", number(requests)), ("Errors", number(errors)),
             ("Tokens", number(tokens)), ("Cost", cost_text)]
    if unpriced:
        items.append(("Unpriced requests", number(unpriced)))
    estimated = sum(int(r.get("estimated") or 0) for r in rows)
    if estimated:
        items.append(("Estimated (cut short)", number(estimated)))
    cells = [fill('<div class="stat"><span>$label</span><strong>$value</strong></div>',
                  label=label, value=value) for label, value in items]
    return fill('<div class="stats" id="usage-totals">$cells</div>', cells=join(cells))


def _charts(rows: list[dict[str, Any]], days: list[str]) -> Html:
    by_model: dict[str, dict[str, dict[str, float]]] = {
        "requests": defaultdict(dict), "tokens": defaultdict(dict), "cost": defaultdict(dict)}
    weight: dict[str, int] = defaultdict(int)
    currencies = {row["currency"] for row in rows if row.get("currency")}
    for row in rows:
        model, day = row.get("model") or _NO_MODEL, row["day"]
        weight[model] += int(row["requests"])
        by_model["requests"][model][day] = float(row["requests"])
        by_model["tokens"][model][day] = float(row["total_tokens"])
        cost = _cost(row)
        if cost is not None and cost > 0:
            by_model["cost"][model][day] = float(cost)
    order = sorted(weight, key=lambda m: (-weight[m], m))
    palette = colours(order)

    def ordered(kind: str) -> dict[str, dict[str, float]]:
        return {m: by_model[kind][m] for m in order if m in by_model[kind]}

    charts = [stacked_bars("Requests per day", days, ordered("requests"), palette,
                           unit="requests"),
              stacked_bars("Tokens per day", days, ordered("tokens"), palette, unit="tokens")]
    if len(currencies) == 1 and by_model["cost"]:
        charts.append(stacked_bars("Cost per day", days, ordered("cost"), palette,
                                   unit=next(iter(currencies))))
    elif len(currencies) > 1:
        charts.append(notice("info", "Costs are in several currencies: see the table."))
    return fill('<div class="charts">$charts</div>', charts=join(charts))


def _cost_cell(row: dict[str, Any]) -> str:
    cost = _cost(row)
    if cost is None:
        return "unknown" if row.get("unpriced") else "—"
    return f"{number(cost)} {row.get('currency') or ''}".strip()


def _budgets(rows: list[dict[str, Any]]) -> Html:
    """The organisation's budgets and their spend this period (nothing when it has none)."""
    if not rows:
        return Html("")
    cells = [[f"{row['scope']} {row['subject']}", row.get("model") or "all models",
              row["period"], row["mode"], f"{row['limit']} {row['currency']}",
              "unknown" if row["spent"] is None else f"{row['spent']} {row['currency']}",
              "" if row["percent"] is None else f"{row['percent']} %"] for row in rows]
    return join([Html('<h2 id="budgets">Budgets this period</h2>'),
                 table(("Budget", "Model", "Period", "Mode", "Limit", "Spent", "Used"), cells,
                       empty="No budgets.", class_="grid numbers")])


async def usage_page(visit: Visit) -> web.StreamResponse:
    """``GET /admin/usage``: usage between ``from`` and ``to`` (UTC days; the last 30 days
    by default), optionally of one ``owner`` or ``model``."""
    query = visit.request.query
    if "from" in query or "to" in query:
        since, until = query.get("from", ""), query.get("to", "")
    else:
        until = _today().isoformat()
        since = (_today() - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    owner, model = query.get("owner", ""), query.get("model", "")
    form = fill(_FILTER, since=field("From", "from", since, kind="date"),
                until=field("To", "to", until, kind="date"),
                owner=field("Owner", "owner", owner), model=field("Model", "model", model))
    filters = {"from": since, "to": until, "owner": owner, "model": model}
    try:
        daily = await visit.api("getUsage", query={"by": "day,model", **filters})
        owners = await visit.api("getUsage", query={"by": "owner", **filters})
    except ApiError as error:
        if error.status != 400:
            raise
        return visit.page("Usage", join([form, notice("error", error.message)]),
                          current="/admin/usage", status=400)
    budgets = _budgets((await visit.api("listBudgets"))["data"])
    rows = daily["data"]
    if not rows:
        body = join([form, fill('<p class="empty">No usage in this period.</p>'), budgets])
        return visit.page("Usage", body, current="/admin/usage")
    days = _days(since, until, {row["day"] for row in rows})
    day_rows = [[row["day"], row.get("model") or _NO_MODEL, number(row["requests"]),
                 number(row["errors"]), number(row["prompt_tokens"]),
                 number(row["completion_tokens"]), number(row["total_tokens"]), _cost_cell(row)]
                for row in sorted(rows, key=lambda r: (r["day"], r.get("model") or ""),
                                  reverse=True)]
    owner_rows = [[row.get("owner_id") or "(none)", number(row["requests"]),
                   number(row["errors"]), number(row["total_tokens"]), _cost_cell(row)]
                  for row in sorted(owners["data"], key=lambda r: -int(r["requests"]))]
    body = join([
        form, _summary(rows), _charts(rows, days),
        Html('<h2 id="by-day">By day and model</h2>'),
        table(("Day", "Model", "Requests", "Errors", "Prompt tokens", "Completion tokens",
               "Total tokens", "Cost"), day_rows, empty="No usage.", class_="grid numbers"),
        Html('<h2 id="by-owner">By owner</h2>'),
        table(("Owner", "Requests", "Errors", "Tokens", "Cost"), owner_rows,
              empty="No usage.", class_="grid numbers"),
        budgets,
    ])
    return visit.page("Usage", body, current="/admin/usage")
