"""Test-only plugins observing events: ``narrow`` wants ``retry.attempt`` alone, ``partial``
takes only some of the hook's arguments, ``own`` observes through ``event_observer`` (and
would note ``on_event`` calls too, which must not come). Each notes what it saw in ``SEEN``."""

from __future__ import annotations

from collections.abc import Callable
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


class Own:
    """Observes every event but ``guard.detection`` through functions of its own."""

    @hookimpl
    def event_observer(self, app: web.Application, name: str
                       ) -> Callable[[RequestContext | None, dict[str, Any]], None] | None:
        """A function noting events called ``name``."""
        if name == "guard.detection":
            return None
        return lambda ctx, fields: SEEN.append(("own", name, fields))

    @hookimpl
    def on_event(self, name: str, fields: dict[str, Any]) -> None:
        """Never called: ``event_observer`` replaces it."""
        SEEN.append(("own via on_event", name, fields))


narrow = Narrow()
partial = Partial()
own = Own()
