"""The console's routes under ``/admin/``, beside (never over) the admin API's ``/admin/v1/``.

Served on the main port only, as the admin API is. Paths under ``/admin/`` that are not the
console's answer an HTML 404, except ``/admin/v1/...``, which stays the API's (JSON).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from plugins.console import pages_auth, pages_conversations, pages_health, pages_keys, pages_usage
from plugins.console.web import (
    SECURITY_HEADERS,
    Handler,
    console_page,
    error_page,
    public_page,
)
from proxy.app import OPS

#: The stylesheet, read once (it ships with the package).
_CSS = resources.files("plugins.console").joinpath("static/console.css").read_bytes()


async def stylesheet(request: web.Request) -> web.StreamResponse:
    """``GET /admin/static/console.css``."""
    headers = {**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"}
    return web.Response(body=_CSS, content_type="text/css", charset="utf-8", headers=headers)


async def to_console(request: web.Request) -> web.StreamResponse:
    """``/admin``: the console is at ``/admin/`` (where its cookies are sent)."""
    return web.Response(status=308, headers={**SECURITY_HEADERS, "Location": "/admin/"})


async def not_found(request: web.Request) -> web.StreamResponse:
    """Any other path under ``/admin/`` (but the API's)."""
    return error_page(404, "There is no such console page.")


def route_defs(app: web.Application) -> list[web.RouteDef]:
    """The console's routes, its catch-all last."""
    guard = app[OPS].main_port_only
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/admin", to_console),
        ("GET", "/admin/", console_page(pages_auth.overview)),
        ("GET", "/admin/login", public_page(pages_auth.login_form)),
        ("POST", "/admin/login", public_page(pages_auth.login)),
        ("POST", "/admin/logout", public_page(pages_auth.logout)),
        ("GET", "/admin/static/console.css", stylesheet),
        ("GET", "/admin/keys", console_page(pages_keys.keys_page)),
        ("POST", "/admin/keys", console_page(pages_keys.create_key, post=True)),
        ("POST", "/admin/keys/{key_id}/rotate", console_page(pages_keys.rotate_key, post=True)),
        ("POST", "/admin/keys/{key_id}/revoke", console_page(pages_keys.revoke_key, post=True)),
        ("GET", "/admin/usage", console_page(pages_usage.usage_page)),
        ("GET", "/admin/conversations",
         console_page(pages_conversations.conversations_page)),
        ("GET", "/admin/conversations/{conversation_id}",
         console_page(pages_conversations.conversation_page)),
        ("GET", "/admin/health", console_page(pages_health.health_page)),
    ]
    defs = [web.route(method, path, guard(handler)) for method, path, handler in table]
    # Not /admin/v1 nor anything under it: those are the admin API's, answered in JSON.
    defs.append(web.route("*", r"/admin/{tail:(?!v1(?:/|$))[\s\S]*}",
                          guard(public_page(not_found))))
    return defs
