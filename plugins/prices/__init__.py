"""The prices plugin: what each request cost, from a price table per model.

The table ships as ``plugins/prices/mistral-prices.yaml`` (Mistral's public list prices on
the date it names, per million input, output and cached-input tokens, per thousand OCR pages
and per audio minute); ``prices.file`` (SIDECAR_PRICES_FILE) names an operator's own file of
that format, whose models and aliases replace or add to it, and ``prices.overrides`` prices
models inline. A bad table stops start-up with one line per problem (:mod:`.reading`).

When a request ends, this plugin prices the usage upstream reported for the model that
answered and sets ``ctx.usage.cost`` and ``ctx.usage.currency`` (:mod:`.charging`), where
every later ``on_end`` observer finds it without knowing this plugin: persistence stores it
with the usage row, budgets charge it. A model the table does not name (exactly, or by an
explicit alias) has no price: its cost stays ``None``, the access line says
``"cost": "unknown"`` and a warning names the model once; nothing is guessed.

Why ``on_end``, and first in the chain: the cost is known only once upstream's usage is (for
a stream, in its last event), and ``on_end`` runs in chain order, so this plugin must end
each request before the observers that read its cost. Start-up refuses a chain in which a
plugin observing ``on_end`` comes before it. The metrics plugin counts the cost it finds
there (``mistral_sidecar_cost_total{model,org}``), as it counts the tokens.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plugins.prices.charging import Pricer
from plugins.prices.reading import build_table
from plugins.prices.table import ModelPrice, PriceTable
from proxy import hookimpl
from proxy.app import PLUGINS, SETTINGS
from proxy.chain import CHAIN_SETTING
from proxy.context import RequestContext
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emitter
from proxy.settings import ConfigError, Setting, Settings

__all__ = ["PRICES", "ModelPrice", "PriceTable", "Pricer"]


PRICES = web.AppKey("prices", Pricer)
"""The application's :class:`~plugins.prices.charging.Pricer`; its ``table`` is the
:class:`~plugins.prices.table.PriceTable` in force (for estimates before a request runs)."""

#: The events this plugin emits.
EVENTS = (
    EventSpec("prices.unpriced", "A request reported usage of a model the price table does "
              "not name: its cost is unknown.", fields=("model", "org"), level="DEBUG",
              metrics=(EventMetric("unpriced_requests", "Requests whose model has no price "
                                   "(their cost is unknown), by model.", ("model",)),)),
    EventSpec("prices.unknown_model", "A model the price table does not name answered "
              "(told once per model and process): add it to prices.file.",
              fields=("model",), level="WARNING"),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """The operator's price file and inline overrides."""
    return [
        Setting("prices.file", "path", "",
                "A price file of your own, in the format of the shipped "
                "plugins/prices/mistral-prices.yaml: its models and aliases replace or add "
                "to the shipped table's; with replace: true it is the whole table."),
        Setting("prices.overrides", "data", {},
                "Prices per model, applied last, in the table's currency: {MODEL: {input, "
                "output, cached_input, per_1000_pages, per_audio_minute}} (tokens per "
                "million)."),
    ]


def _table(settings: Settings) -> tuple[PriceTable | None, list[str]]:
    source = settings.declared["prices.file"].describe_source()
    return build_table(source, settings["prices.file"], settings["prices.overrides"])


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """Every problem of the price table in force, one line each."""
    return _table(settings)[1]


@hookimpl
def startup(app: web.Application) -> None:
    """Load the table; refuse a chain that ends requests elsewhere before this plugin."""
    problems = _order_problems(app)
    table, found = _table(app[SETTINGS])
    problems.extend(found)
    if problems or table is None:
        raise ConfigError(problems)
    app[PRICES] = Pricer(table, unpriced=emitter(app, "prices.unpriced"),
                         unknown=emitter(app, "prices.unknown_model"))


@hookimpl
def readiness(app: web.Application) -> dict[str, Any]:
    """Which price list is in force, for ``/readyz`` (the plugin starts before the JSON log
    output, so it says so here rather than in a start-up line)."""
    table = app[PRICES].table
    return {"prices": {"ok": True, "models": len(table.models), "aliases": len(table.aliases),
                       "currency": table.currency,
                       "as_of": table.as_of.isoformat() if table.as_of else None}}


def _order_problems(app: web.Application) -> list[str]:
    """A line naming the plugins that observe the end of requests before this one: they
    would read a cost it has not set yet."""
    enders = [caller.plugin_name for caller in app[PLUGINS].callers("on_end")]
    mine = next(caller.plugin_name for caller in app[PLUGINS].callers("on_end")
                if caller.function is on_end)
    before = enders[:enders.index(mine)]
    if not before:
        return []
    return [f"{CHAIN_SETTING}: {mine} must come before {', '.join(before)}, "
            "which observe the end of requests and would not see its cost (put it first)"]


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Price the request's usage for the observers after this plugin."""
    pricer = ctx.app.get(PRICES)
    if pricer is not None:
        pricer.charge(ctx)
