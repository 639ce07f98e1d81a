"""Reporting events from plugins to whoever observes them (logs, metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.app import PLUGINS

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.context import RequestContext


def emit(app: web.Application, name: str, ctx: RequestContext | None = None,
         **fields: Any) -> None:
    """Report event ``name`` with ``fields`` to every ``on_event`` implementation, in order.

    Observers must not break the caller: their exceptions are logged and swallowed.
    """
    callers = app[PLUGINS].callers("on_event")
    if not callers:
        return
    arguments = {"app": app, "ctx": ctx, "name": name, "fields": fields}
    for caller in callers:
        try:
            caller.call_with(arguments)
        except Exception:
            import logging

            logging.getLogger("mistral_sidecar.events").exception(
                "plugin %s failed observing %s", caller.plugin_name, name)

