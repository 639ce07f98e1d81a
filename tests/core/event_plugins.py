"""Test-only plugins observing events: ``narrow`` wants ``retry.attempt`` alone, ``partial``
takes only some of the hook's arguments. Each notes what it saw in ``SEEN``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext
from proxy.events import observes

SEEN: list[tuple[str, str, dict[str, Any]]] = []


class Narrow:
    """Observes ``retry.attempt`` only."""

    @hookimpl
    @observes("retry.attempt")
    def on_event(self, app: web.Application, ctx: RequestContext | None, name: str,
                 fields: dict[str, Any]) -> None:
        """Note the event."""
        SEEN.append(("narrow", name, fields))


class Partial:
    """Asks for the name and fields only."""

    @hookimpl
    def on_event(self, name: str, fields: dict[str, Any]) -> None:
        """Note the event."""
        SEEN.append(("partial", name, fields))


narrow = Narrow()
partial = Partial()
