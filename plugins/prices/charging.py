"""Pricing each ended request: its cost on the core's usage object, on the access line and
in the events that feed the cost metrics."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from plugins.prices.table import PriceTable
from proxy.context import RequestContext

__all__ = ["Pricer", "Report", "answered_model"]

Report = Callable[[RequestContext | None, dict[str, Any]], None]
#: What the access line shows of a cost: billionths (an audio minute's price divides
#: without end).
_LOGGED = Decimal("1e-9")
#: Models without a price that are told about once each; past this many (upstream would
#: have to answer for that many names), no more are told about.
_UNKNOWN_TOLD = 1000


def answered_model(ctx: RequestContext) -> str | None:
    """The model that answered: as the response names it, else as the request did, else as
    a conversation's output entries do."""
    body = ctx.response_json
    model: Any = body.get("model") if type(body) is dict else None
    if type(model) is str and model:
        return model
    model = ctx.resource_ids.get("model")
    if model:
        return str(model)
    if type(body) is dict:
        for entry in body.get("outputs") or ():
            if isinstance(entry, dict) and isinstance(entry.get("model"), str) \
                    and entry["model"]:
                return str(entry["model"])
    return None


class Pricer:
    """Prices ended requests with one table and reports what it finds.

    ``unpriced`` reports each request whose model has no price (``prices.unpriced``),
    ``unknown`` each such model once (``prices.unknown_model``); either may be ``None`` when
    nothing observes it. What a priced request cost is on ``ctx.usage`` and its access line;
    the metrics plugin counts it from there.
    """

    def __init__(self, table: PriceTable, *, unpriced: Report | None,
                 unknown: Report | None) -> None:
        self.table = table
        self._unpriced = unpriced
        self._unknown = unknown
        self._told: set[str] = set()

    def charge(self, ctx: RequestContext) -> None:
        """Set the cost of ``ctx``'s usage (``usage.cost`` and ``usage.currency``), or leave
        it ``None`` when its model has no price, and note it on the access line. A request
        without usage (refused, failed, cut short before upstream reported it) costs
        nothing that can be known and is left alone."""
        usage = ctx.usage
        if usage is None:
            return
        model = answered_model(ctx)
        identity = ctx.identity
        org = identity.org if identity is not None else None
        cost = None if model is None else self.table.cost(model, usage)
        if cost is None:
            ctx.log["cost"] = "unknown"
            if self._unpriced is not None:
                self._unpriced(ctx, {"model": model, "org": org})
            self._tell_unknown(ctx, model)
            return
        usage.cost = cost
        usage.currency = self.table.currency
        ctx.log["cost"] = format(cost.quantize(_LOGGED, ROUND_HALF_UP).normalize(), "f")
        ctx.log["currency"] = self.table.currency

    def _tell_unknown(self, ctx: RequestContext, model: str | None) -> None:
        name = model or ""
        if name in self._told or len(self._told) >= _UNKNOWN_TOLD:
            return
        self._told.add(name)
        if self._unknown is not None:
            self._unknown(ctx, {"model": model})
