"""``/admin/health``: the live state of the process that answers, from the admin API's
``getState``: readiness as ``/readyz`` reports it, each plugin's check (circuit breaker,
rate limiter backend and fallback, persistence spool, key pool, store ...) and every gauge.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plugins.console.markup import Html, esc, fill, join, table
from plugins.console.web import Visit

_STATUS_TEXT = {"ready": "Ready", "unready": "Not ready", "starting": "Starting"}


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as ``(dotted.name, value)`` pairs."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for name, inner in value.items():
            out.extend(_flat(inner, f"{prefix}{name}."))
        return out
    if isinstance(value, list):
        return [(prefix.rstrip("."), ", ".join(str(v) for v in value))]
    return [(prefix.rstrip("."), value)]


def _shown(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return "" if value is None else str(value)


def _check(name: str, report: Any) -> Html:
    ok = not isinstance(report, dict) or report.get("ok", True)
    details = [(k, v) for k, v in _flat(report) if k != "ok"] if isinstance(report, dict) \
        else [("value", report)]
    rows = join(fill("<tr><th scope=\"row\">$k</th><td>$v</td></tr>", k=k, v=_shown(v))
                for k, v in details)
    state = "ok" if ok else "failing"
    return fill('<section class="check $state" id="check-$name"><h3>$name '
                '<span class="badge $state">$label</span></h3><table class="kv">$rows'
                "</table></section>", state=state, name=name, rows=rows,
                label="ok" if ok else "failing")


def _tile(slug: str, label: str, value: str, state: str = "") -> Html:
    return fill('<div class="stat $state" id="summary-$slug"><span>$label</span>'
                "<strong>$value</strong></div>", slug=slug, label=label, value=value,
                state=state)


def _summary(checks: dict[str, Any], gauges: list[dict[str, Any]]) -> Html:
    """The facts an operator looks for first: breaker, limiter, spool, key pool."""
    absent = "not in the chain"
    breaker = checks.get("breaker")
    tiles = [_tile("breaker", "Circuit breaker", str(breaker.get("state", "?")),
                   "ok" if breaker.get("state") == "closed" else "failing")
             if isinstance(breaker, dict) else _tile("breaker", "Circuit breaker", absent)]
    limiter = checks.get("ratelimit")
    if isinstance(limiter, dict):
        fallback = limiter.get("fallback") is True
        text = str(limiter.get("backend", "?")) + (" (fallback: Redis unusable)"
                                                   if fallback else "")
        tiles.append(_tile("limiter", "Rate limiter", text, "failing" if fallback else "ok"))
    else:
        tiles.append(_tile("limiter", "Rate limiter", absent))
    spool = checks.get("persistence")
    if isinstance(spool, dict):
        text = (f"{spool.get('spool_bytes', 0)} bytes spooled, {spool.get('queue_depth', 0)} "
                f"queued, lag {spool.get('lag_seconds', 0)} s")
        full = spool.get("spool_full") is True
        tiles.append(_tile("spool", "Persistence spool", text + (" (full)" if full else ""),
                           "failing" if full else "ok"))
    else:
        tiles.append(_tile("spool", "Persistence spool", absent))
    pool = {str((g.get("labels") or {}).get("state")): int(g.get("value") or 0)
            for g in gauges if g.get("name") == "keypool_keys"}
    if pool:
        available, cooling = pool.get("available", 0), pool.get("cooling", 0)
        tiles.append(_tile("keypool", "Upstream key pool",
                           f"{available} available, {cooling} cooling down",
                           "ok" if available else "failing"))
    else:
        tiles.append(_tile("keypool", "Upstream key pool", absent))
    return fill('<div class="stats" id="health-summary">$tiles</div>', tiles=join(tiles))


async def health_page(visit: Visit) -> web.StreamResponse:
    """``GET /admin/health``: readiness, checks and gauges of this process."""
    state = await visit.api("getState")
    status = str(state.get("status", ""))
    checks = state.get("checks") or {}
    gauges = state.get("gauges") or []
    body = [fill('<p class="lead">This process is <span class="badge $status" '
                 'id="health-status">$text</span>. Every replica (and worker) has its own '
                 "state; reload the page to see it now.</p>", status=status,
                 text=_STATUS_TEXT.get(status, status)), _summary(checks, gauges)]
    if checks:
        body.append(Html('<h2 id="checks">Checks</h2><div class="checks">'
                         + join(_check(name, report) for name, report in checks.items())
                         + "</div>"))
    rows = [[g.get("plugin", ""), Html(f"<code>{esc(g.get('name', ''))}</code>"),
             ", ".join(f"{k}={v}" for k, v in sorted((g.get("labels") or {}).items())),
             _shown(g.get("value"))] for g in gauges]
    body.append(Html('<h2 id="gauges">Gauges</h2>'))
    body.append(table(("Plugin", "Gauge", "Labels", "Value"), rows,
                      empty="No plugin reports gauges."))
    return visit.page("Health", join(body), current="/admin/health")
