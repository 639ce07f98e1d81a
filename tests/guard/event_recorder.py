"""A test plugin: records the events plugins emit and the request bodies sent upstream.

Load it last in the chain by module path, e.g.
``SIDECAR_PLUGINS_CHAIN="validate,guard,tests.guard.event_recorder"``. Being last, its
``wrap_upstream`` wrapper is the innermost one, so it sees exactly the body the core sends.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from tests.support.event_recorder import EVENTS, on_event, reset
from tests.support.event_recorder import events as recorded

__all__ = ["EVENTS", "SENT", "events", "on_event", "sent_bodies", "startup", "wrap_upstream"]

SENT = web.AppKey("test_guard_sent", list)


@hookimpl
def startup(app: web.Application) -> None:
    """Start with empty records."""
    reset(app)
    app[SENT] = []


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall:
    """Record the body of every upstream attempt."""

    async def recorded(inner: RequestContext) -> UpstreamResponse:
        inner.app[SENT].append(inner.body)
        return await call(inner)

    return recorded


def events(app: web.Application, name: str = "guard.detection") -> list[dict[str, Any]]:
    """Fields of every recorded event called ``name``."""
    return recorded(app, name)


def sent_bodies(app: web.Application) -> list[bytes | None]:
    """Bodies sent upstream so far (``None`` for streamed bodies)."""
    return list(app[SENT])
