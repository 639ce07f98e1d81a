"""A test plugin that keeps every finished request's context (``CONTEXTS`` on the app), so a
test can encode the same requests several ways after the traffic.

Enable with ``SIDECAR_PLUGINS_CHAIN="...,tests.observability.obs_contexts"``.
"""

from __future__ import annotations

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext

PLUGIN = "tests.observability.obs_contexts"
CONTEXTS = web.AppKey("obs_contexts", list[RequestContext])


@hookimpl
def startup(app: web.Application) -> None:
    """Start with no request."""
    app[CONTEXTS] = []


def _keep(ctx: RequestContext) -> None:
    kept = ctx.app[CONTEXTS]
    if ctx not in kept:
        kept.append(ctx)


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Keep the ended request."""
    _keep(ctx)
