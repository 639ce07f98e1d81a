"""``/admin/v1/usage``: the organisation's requests, tokens and cost, summed per owner, key,
model or UTC day, through the report ``mistral-sidecar usage`` prints
(:mod:`plugins.persistence.usage_report`).

Only usage rows that carry the caller's organisation count: rows written without
authentication, or before the usage log recorded organisations, belong to nobody here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from plugins.admin.plumbing import AdminRequest, answer, bad_request, query
from plugins.persistence.records import canonical_time
from plugins.persistence.usage_report import DEFAULT_GROUPS, GROUPS, parse_groups, read_usage


def _day(params: dict[str, str], name: str) -> date | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{name}: expected a UTC day such as 2025-01-31.") from None


def _start_of(day: date) -> str | None:
    return canonical_time(datetime(day.year, day.month, day.day, tzinfo=UTC))


async def usage(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/usage``: one row per group (``by``), for the days ``from`` to ``to``
    (UTC, both included; either may be left open)."""
    params = query(admin.request, ("by", "from", "to", "owner", "key", "model"))
    groups: tuple[str, ...] = DEFAULT_GROUPS
    if "by" in params:
        found = parse_groups(params["by"])
        if found is None:
            raise bad_request(f"by: expected some of {', '.join(GROUPS)} separated by commas.")
        groups = found
    first, last = _day(params, "from"), _day(params, "to")
    if first is not None and last is not None and first > last:
        raise bad_request("from: must not be after to.")
    rows = await admin.run(read_usage(
        admin.db, admin.db.dialect, groups, org=admin.caller.org,
        owner=params.get("owner"), key=params.get("key"), model=params.get("model"),
        since=None if first is None else _start_of(first),
        until=None if last is None else _start_of(last + timedelta(days=1))))
    return answer({"object": "list", "by": list(groups),
                   "from": None if first is None else first.isoformat(),
                   "to": None if last is None else last.isoformat(), "data": rows})
