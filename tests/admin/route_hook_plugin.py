"""Plugins that serve routes of their own: ``tests.admin.route_hook_plugin`` adds
``/acme/hello``; ``tests.admin.route_hook_plugin:SHADOWING`` tries to take the API's
``/v1/models``, which the sidecar must refuse."""

from __future__ import annotations

from aiohttp import web

from proxy import hookimpl


async def _hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "from a plugin"})


@hookimpl
def register_routes(app: web.Application) -> list[web.RouteDef]:
    """``GET /acme/hello``."""
    return [web.get("/acme/hello", _hello, allow_head=False)]


class _Shadowing:
    """Registers a route the sidecar serves itself."""

    @hookimpl
    def register_routes(self, app: web.Application) -> list[web.RouteDef]:
        """``GET /v1/models``: the API's."""
        return [web.get("/v1/models", _hello, allow_head=False)]


SHADOWING = _Shadowing()
