"""A test plugin that records every event plugins emit, for assertions on the app.

Test-area probes re-export ``startup``, ``on_event`` and ``events`` from here (pluggy registers
a module's marked functions, imported ones included); load this module alone with
``SIDECAR_PLUGINS_CHAIN=...,tests.support.event_recorder``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext

EVENTS = web.AppKey("test_events", list)
"""``(name, fields, request_id or None)`` for every event, oldest first."""


def reset(app: web.Application) -> None:
    """Forget everything recorded."""
    app[EVENTS] = []


@hookimpl
def startup(app: web.Application) -> None:
    """Start with no events."""
    reset(app)


@hookimpl
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """Keep the event with a copy of its fields and its request id."""
    app[EVENTS].append((name, dict(fields), ctx.request_id if ctx is not None else None))


def events(app: web.Application, name: str) -> list[dict[str, Any]]:
    """The fields of every recorded event called ``name``, oldest first."""
    return [fields for event, fields, _request in app.get(EVENTS, []) if event == name]
