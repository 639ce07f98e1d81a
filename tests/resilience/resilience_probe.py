"""A test-only plugin for the resilience tests: records events, and imitates an authentication
plugin in pass-through mode (the caller's own key goes upstream).

Load it with ``SIDECAR_PLUGINS="retry,breaker,keypool,tests.resilience.resilience_probe"``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext

EVENTS = web.AppKey("resilience_probe_events", list)
#: A request carrying this header has its value sent upstream as the API key.
PASSTHROUGH_HEADER = "X-Test-Upstream-Key"


@hookimpl
def startup(app: web.Application) -> None:
    """Start with no events."""
    app[EVENTS] = []


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Put the caller's key in place of the configured one, as pass-through auth does."""
    own = ctx.request.headers.get(PASSTHROUGH_HEADER)
    if own:
        ctx.upstream_api_key = own


@hookimpl
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """Keep every event with its fields."""
    app[EVENTS].append((name, dict(fields)))


def events(app: web.Application, name: str) -> list[dict[str, Any]]:
    """The fields of every recorded event called ``name``, oldest first."""
    return [fields for event, fields in app[EVENTS] if event == name]
