"""A test-only plugin: remembers the persistence events it observes (``on_event``) and, standing
in for an authentication plugin, takes the caller's owner from an ``X-Test-Owner`` header.

Enable it by module path after the plugins under test:
``SIDECAR_PLUGINS=store,persistence,tests.persistence.persistence_probe``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import Identity, RequestContext

EVENTS = web.AppKey("persistence_probe_events", list)


@hookimpl
def startup(app: web.Application) -> None:
    """Start with no events."""
    app[EVENTS] = []


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Set the caller's identity from ``X-Test-Owner``, as an auth plugin would."""
    owner = ctx.request.headers.get("X-Test-Owner")
    if owner:
        ctx.identity = Identity(key_id=f"key-{owner}", owner=owner, role="user")


@hookimpl
def on_event(app: web.Application, ctx: Any, name: str, fields: dict[str, Any]) -> None:
    """Keep persistence events as ``(name, fields)``."""
    if name.startswith("persistence.") and EVENTS in app:
        app[EVENTS].append((name, dict(fields)))


def events(app: web.Application, name: str) -> list[dict[str, Any]]:
    """The fields of every event called ``name`` seen so far."""
    return [fields for seen, fields in app.get(EVENTS, []) if seen == name]
