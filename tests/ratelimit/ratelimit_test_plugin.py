"""A stand-in for an authentication plugin and an event observer, for the rate-limit tests.

``X-Test-Key-Id`` / ``X-Test-Role`` request headers become ``ctx.identity`` (what the auth
plugin does from a real key); every event emitted is recorded on the app under ``EVENTS``.
Enable with ``SIDECAR_PLUGINS="tests.ratelimit.ratelimit_test_plugin,ratelimit"``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import Identity, RequestContext

EVENTS = web.AppKey("ratelimit_test_events", list)
PLUGIN = "tests.ratelimit.ratelimit_test_plugin"


@hookimpl
def startup(app: web.Application) -> None:
    """An empty event log."""
    app[EVENTS] = []


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Identify the caller from the test headers, when present."""
    key_id = ctx.request.headers.get("X-Test-Key-Id")
    if key_id:
        ctx.identity = Identity(key_id=key_id, owner="test",
                                role=ctx.request.headers.get("X-Test-Role", "user"))


@hookimpl
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """Record ``(name, fields)``."""
    app[EVENTS].append((name, dict(fields)))


def events(app: web.Application, name: str) -> list[dict[str, Any]]:
    """Fields of every recorded event called ``name``."""
    return [fields for event, fields in app[EVENTS] if event == name]
