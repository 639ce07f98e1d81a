"""The ``usage`` report: usage_log summed per group (owner, key, org, model, day), with
what each group cost.

A group's cost is the sum of its requests' costs (``cost_nanos``, billionths of their
currency) when every request in it that reported tokens has one; when some did not (a model
without a price, a row older than pricing), the cost is unknown, shown as ``unknown`` and
``null``, and ``unpriced`` counts those requests. A request that reported no tokens (an
error) costs nothing whatever its price. Groups in different currencies are never added up.

Other plugins add sections after the table (the budgets plugin its budgets) through the
``usage_report_sections`` hook (:func:`report_sections`); this module knows none of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from plugins.store.db import Executor
from proxy.chain import PluginChain, await_me_maybe
from proxy.hookspecs import UsageSection
from proxy.money import format_amount

__all__ = ["DEFAULT_GROUPS", "FILTERS", "GROUPS", "SectionClash", "format_sections",
           "format_usage", "parse_groups", "read_usage", "report_document", "report_sections",
           "summarise", "usage_query"]

#: What ``--by`` may name, in the order the report lists them.
GROUPS = ("owner", "key", "org", "model", "day")
DEFAULT_GROUPS = ("owner", "model")
#: The name of each group in ``--json`` rows.
_JSON_NAMES = {"owner": "owner_id", "key": "key_id", "org": "org", "model": "model",
               "day": "day"}
_COLUMNS = {"owner": "owner_id", "key": "key_id", "org": "org", "model": "model"}
#: The UTC day of a row, per dialect (SQLite keeps times as canonical UTC text).
_DAY = {"postgres": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "sqlite": "substr(created_at, 1, 10)"}
#: Decimals of a cost in the table (the JSON carries it exactly).
_SHOWN = Decimal("0.000001")
_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")
#: What :func:`read_usage` may filter on -> the condition on usage_log; ``since`` and
#: ``until`` take canonical timestamp text (``until`` is exclusive).
FILTERS = {"org": "org = ?", "owner": "owner_id = ?", "key": "key_id = ?",
           "model": "model = ?", "since": "created_at >= ?", "until": "created_at < ?"}


def parse_groups(text: str) -> tuple[str, ...] | None:
    """Comma-separated group names (``--by``, the admin API's ``by``) as a tuple, each once,
    in the order given; ``None`` when one is unknown or none is named."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in GROUPS for name in names):
        return None
    return tuple(dict.fromkeys(names))


async def read_usage(db: Executor, dialect: str, groups: Sequence[str],
                     **filters: str | None) -> list[dict[str, Any]]:
    """The report's rows (:func:`summarise`) over the usage_log rows that match every
    filter given (:data:`FILTERS`; ``None`` filters nothing). The ``usage`` command and the
    admin API both read usage through this."""
    where: list[str] = []
    params: list[str] = []
    for name, value in filters.items():
        if value is not None:
            where.append(FILTERS[name])
            params.append(value)
    rows = await db.fetchall(usage_query(groups, dialect, where), params)
    return summarise(rows, groups)


def usage_query(groups: Sequence[str], dialect: str, where: Sequence[str]) -> str:
    """The statement summing usage_log per ``groups`` and currency, restricted by the
    ``where`` conditions (``?`` placeholders); group values come back as ``g0``, ``g1`` ..."""
    keys = [_DAY.get(dialect, _DAY["sqlite"]) if g == "day" else _COLUMNS[g] for g in groups]
    select = "".join(f"{key} AS g{i}, " for i, key in enumerate(keys))
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return (
        f"SELECT {select}currency, COUNT(*) AS requests, "
        "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors, "
        "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
        "SUM(total_tokens) AS total_tokens, SUM(cost_nanos) AS cost_nanos, "
        "SUM(CASE WHEN cost_nanos IS NULL AND (prompt_tokens > 0 OR completion_tokens > 0 "
        "OR total_tokens > 0) THEN 1 ELSE 0 END) AS unpriced, "
        "SUM(CASE WHEN estimated THEN 1 ELSE 0 END) AS estimated "
        f"FROM usage_log {clause}GROUP BY {', '.join([*keys, 'currency'])}")


def summarise(rows: Iterable[Mapping[str, Any]], groups: Sequence[str]) -> list[dict[str, Any]]:
    """The report's rows from :func:`usage_query`'s: one per group, sorted, with ``cost``
    (exact decimal text, ``None`` when unknown), ``currency`` and ``unpriced``.

    A group's rows without a currency (unpriced requests, errors) join its priced rows when
    those are in one currency, and stay a row of their own otherwise.
    """
    parts: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        parts.setdefault(tuple(row[f"g{i}"] for i in range(len(groups))), []).append(row)
    out: list[dict[str, Any]] = []
    for key, found in parts.items():
        priced = [part for part in found if part["currency"] is not None]
        unpriced = [part for part in found if part["currency"] is None]
        if len(priced) <= 1:
            lines = [priced + unpriced]
        else:
            lines = [[part] for part in priced] + ([unpriced] if unpriced else [])
        out.extend(_line(groups, key, members) for members in lines)
    out.sort(key=lambda line: tuple((line[_JSON_NAMES[g]] is not None,
                                     str(line[_JSON_NAMES[g]] or "")) for g in groups))
    return out


def _line(groups: Sequence[str], key: tuple[Any, ...],
          members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    line: dict[str, Any] = {_JSON_NAMES[g]: value for g, value in zip(groups, key, strict=True)}
    for name in _SUMS:
        line[name] = sum(int(member[name] or 0) for member in members)
    unpriced = sum(int(member["unpriced"] or 0) for member in members)
    nanos = sum(int(member["cost_nanos"] or 0) for member in members)
    currency = next((member["currency"] for member in members if member["currency"]), None)
    line["cost"] = None if unpriced else format_amount(nanos)
    line["currency"] = currency
    line["unpriced"] = unpriced
    line["estimated"] = sum(int(member["estimated"] or 0) for member in members)
    return line


def format_usage(rows: list[dict[str, Any]], groups: Sequence[str] = DEFAULT_GROUPS) -> str:
    """The report as an aligned table with a total line; costs to six decimals. An
    ``estimated`` column counts the requests whose tokens are the sidecar's estimate (cut
    short before upstream reported them), shown only when there are some."""
    estimated = any(r.get("estimated") for r in rows)
    header = [*groups, "requests", "errors", "prompt", "completion", "total", "cost",
              "currency", "unpriced"] + (["estimated"] if estimated else [])
    table = [[_cell(r[_JSON_NAMES[g]]) for g in groups]
             + [str(r[name]) for name in _SUMS]
             + [_shown(r["cost"]), r["currency"] or "-", str(r["unpriced"])]
             + ([str(r["estimated"])] if estimated else []) for r in rows]
    table.append(["TOTAL", *[""] * (len(groups) - 1), *_totals(rows)]
                 + ([str(sum(int(r["estimated"]) for r in rows))] if estimated else []))
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    out = []
    for row in [header, *table]:
        cells = [row[i].ljust(widths[i]) if i < len(groups) else row[i].rjust(widths[i])
                 for i in range(len(header))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def _totals(rows: list[dict[str, Any]]) -> list[str]:
    """The total line's cells: sums, and the total cost when it is known and in one
    currency."""
    sums = [str(sum(int(r[name]) for r in rows)) for name in _SUMS]
    unpriced = sum(int(r["unpriced"]) for r in rows)
    currencies = {r["currency"] for r in rows if r["currency"]}
    if unpriced:
        cost, currency = "unknown", "-"
    elif len(currencies) > 1:
        cost, currency = "mixed", "-"
    else:
        total = sum((Decimal(r["cost"]) for r in rows if r["cost"] is not None), Decimal(0))
        cost, currency = _shown(format(total, "f")), next(iter(currencies), "-")
    return [*sums, cost, currency, str(unpriced)]


def _shown(cost: str | None) -> str:
    return "unknown" if cost is None else format(
        Decimal(cost).quantize(_SHOWN, ROUND_HALF_UP), "f")


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


# --- sections from other plugins -------------------------------------------------------------


class SectionClash(Exception):
    """Two ``usage_report_sections`` results carry one name."""


async def report_sections(chain: PluginChain, **arguments: Any) -> list[UsageSection]:
    """Every plugin's ``usage_report_sections`` in chain order, each awaited before the next
    plugin is called; ``arguments`` are the hook's, by name. Raises :class:`SectionClash`
    when a name comes twice (it is a key of the JSON report)."""
    found: list[UsageSection] = []
    reported_by: dict[str, str] = {}
    for caller in chain.callers("usage_report_sections"):
        for section in await await_me_maybe(caller(**arguments)) or ():
            name = section["name"]
            if name in reported_by:
                raise SectionClash(_clash(reported_by[name], caller.plugin_name, name))
            reported_by[name] = caller.plugin_name
            found.append(section)
    return found


def _clash(first: str, second: str, name: str) -> str:
    if first == second:
        return f"plugin {first} reports two sections named {name!r}"
    return f"plugins {first} and {second} both report a section named {name!r}"


def format_sections(sections: Sequence[UsageSection]) -> str:
    """The sections as the table output shows them after the usage table: a blank line,
    the title, the section's text; nothing at all when there are none."""
    return "".join(f"\n{section['title']}\n{_ended(section['text'])}" for section in sections)


def _ended(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def report_document(rows: list[dict[str, Any]], sections: Sequence[UsageSection]
                    ) -> dict[str, Any]:
    """``usage --json --sections``: the usage rows and each section's title and rows by
    name, in chain order (always this shape, with or without sections)."""
    return {"usage": rows,
            "sections": {section["name"]: {"title": section["title"], "rows": section["rows"]}
                         for section in sections}}
