"""Reporting events from plugins to whoever observes them (logs, metrics)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from proxy.app import PLUGINS
from proxy.chain import OBSERVED_EVENTS_ATTRIBUTE, HookCaller

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.context import RequestContext


logger = logging.getLogger("mistral_sidecar.events")

#: The arguments of ``on_event``, in order: app, request context (or ``None``), event name,
#: fields.
_ARGUMENTS = ("app", "ctx", "name", "fields")


def emit(app: web.Application, name: str, ctx: RequestContext | None = None,
         **fields: Any) -> None:
    """Report event ``name`` with ``fields`` to every plugin that observes it (through
    ``event_observer`` or ``on_event``), in chain order.

    Observers must not break the caller: their exceptions are logged and swallowed.
    """
    report = emitter(app, name)
    if report is not None:
        report(ctx, fields)


def emitter(app: web.Application, name: str
            ) -> Callable[[RequestContext | None, dict[str, Any]], None] | None:
    """A reporter of event ``name``: ``report(ctx, fields)`` is ``emit(app, name, ctx,
    **fields)``. Code that reports an event on nearly every request (the limiter's
    decisions) makes it once and keeps it; ``None`` when nothing observes ``name``, so that
    the caller can skip building the fields.

    Each plugin in the chain observes through the function its ``event_observer`` returns,
    if it implements that hook, else through its ``on_event`` (when it observes ``name``).
    """
    chain = app[PLUGINS]
    own = {caller.plugin_name: caller for caller in chain.callers("event_observer")}
    generic = {caller.plugin_name: caller for caller in chain.event_callers(name)
               if caller.plugin_name not in own}
    observers: list[tuple[str, Callable[[RequestContext | None, dict[str, Any]], Any]]] = []
    for plugin_name in sorted(own.keys() | generic.keys(), key=chain.position):
        if plugin_name in generic:
            observers.append((plugin_name, _on_event(generic[plugin_name], app, name)))
            continue
        try:
            observe = own[plugin_name](app=app, name=name)
        except Exception:
            logger.exception("plugin %s failed to observe %s", plugin_name, name)
            continue
        if observe is not None:
            observers.append((plugin_name, observe))
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
