"""Reporting events from plugins to whoever observes them (logs, metrics)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from proxy.app import EVENTS, PLUGINS
from proxy.chain import OBSERVED_EVENTS_ATTRIBUTE, HookCaller
from proxy.event_registry import EventRegistry, EventSpec
from proxy.event_registry import UndeclaredEvent as UndeclaredEvent

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.context import RequestContext


logger = logging.getLogger("mistral_sidecar.events")

#: The arguments of ``on_event``, in order: app, request context (or ``None``), event name,
#: fields.
_ARGUMENTS = ("app", "ctx", "name", "fields")


def emit(app: web.Application, name: str, ctx: RequestContext | None = None,
         **fields: Any) -> None:
    """Report event ``name`` with ``fields`` to every plugin that observes it (its
    ``on_event``), in chain order.

    Observers must not break the caller: their exceptions are logged and swallowed. A name
    no plugin in the chain declares (``sidecar_events``) raises :class:`UndeclaredEvent`.
    """
    try:
        report = emitter(app, name)
    except UndeclaredEvent:
        # Logged here too: a caller on a background task may swallow what it raises.
        logger.error("undeclared event %r emitted", name, stack_info=True)
        raise
    if report is not None:
        report(ctx, fields)


def emitter(app: web.Application, name: str
            ) -> Callable[[RequestContext | None, dict[str, Any]], None] | None:
    """A reporter of event ``name``: ``report(ctx, fields)`` is ``emit(app, name, ctx,
    **fields)``. Code that reports an event on nearly every request (the limiter's
    decisions) makes it once and keeps it; ``None`` when nothing observes ``name``, so that
    the caller can skip building the fields. A name no plugin in the chain declares raises
    :class:`UndeclaredEvent`: made in ``startup``, a reporter of a misspelt name stops
    start-up instead of failing a request.
    """
    declaration(app, name)
    chain = app[PLUGINS]
    observers = [(caller.plugin_name, _on_event(caller, app, name))
                 for caller in chain.event_callers(name)]
    if not observers:
        return None

    def report(ctx: RequestContext | None, fields: dict[str, Any]) -> None:
        for plugin_name, observe in observers:
            try:
                observe(ctx, fields)
            except Exception:
                logger.exception("plugin %s failed observing %s", plugin_name, name)

    return report


def _on_event(caller: HookCaller, app: web.Application, name: str
              ) -> Callable[[RequestContext | None, dict[str, Any]], Any]:
    """An ``on_event`` implementation as an observer of ``name``: called positionally when
    it takes all four arguments, else by keyword with those it declares."""
    if caller.argnames == _ARGUMENTS:
        function = caller.function
        return lambda ctx, fields: function(app, ctx, name, fields)
    return lambda ctx, fields: caller(app=app, ctx=ctx, name=name, fields=fields)


def registry(app: web.Application) -> EventRegistry:
    """The events the plugins in ``app``'s chain declare.

    :func:`proxy.app.create_app` gathers them; an application put together by hand (a test's)
    gathers them on first use.
    """
    found = app.get(EVENTS)
    if found is None:
        found = EventRegistry.gather(app[PLUGINS], app)
        if not app.frozen:
            app[EVENTS] = found
    return found


def declaration(app: web.Application, name: str) -> EventSpec:
    """The declaration of event ``name``; :class:`UndeclaredEvent` when no plugin in the
    chain declares it."""
    return registry(app).spec(name)


def event_level(app: web.Application, name: str, fields: dict[str, Any]) -> int:
    """The log level of event ``name`` with ``fields``, as its declaration says."""
    return declaration(app, name).level_of(fields)


_F = TypeVar("_F", bound=Callable[..., Any])


def observes(*names: str) -> Callable[[_F], _F]:
    """Mark an ``on_event`` implementation as interested in the events ``names`` only.

    Events are reported on the request path; an observer that wants a few of them is then
    not called for the others (an implementation without the mark gets every event)::

        @hookimpl
        @observes("retry.attempt")
        def on_event(app, ctx, name, fields): ...
    """

    def mark(function: _F) -> _F:
        setattr(function, OBSERVED_EVENTS_ATTRIBUTE, frozenset(names))
        return function

    return mark
