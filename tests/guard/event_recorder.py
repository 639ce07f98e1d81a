"""A test plugin: records the events plugins emit and the request bodies sent upstream.

Load it last in the chain by module path, e.g.
``SIDECAR_PLUGINS="validate,guard,tests.guard.event_recorder"``. Being last, its
``wrap_upstream`` wrapper is the innermost one, so it sees exactly the body the core sends.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse

EVENTS = web.AppKey("test_guard_events", list)
SENT = web.AppKey("test_guard_sent", list)


@hookimpl
def startup(app: web.Application) -> None:
    """Start with empty records."""
    app[EVENTS] = []
    app[SENT] = []


@hookimpl
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """Keep ``(name, fields, request_id)``."""
    app[EVENTS].append((name, dict(fields), ctx.request_id if ctx is not None else None))


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall:
    """Record the body of every upstream attempt."""

    async def recorded(inner: RequestContext) -> UpstreamResponse:
        inner.app[SENT].append(inner.body)
        return await call(inner)

    return recorded


def events(app: web.Application, name: str = "guard.detection") -> list[dict[str, Any]]:
    """Fields of every recorded event called ``name``."""
    return [fields for event, fields, _ in app[EVENTS] if event == name]


def sent_bodies(app: web.Application) -> list[bytes | None]:
    """Bodies sent upstream so far (``None`` for streamed bodies)."""
    return list(app[SENT])
