"""The admin API's routes: one table (:data:`ROUTES`) that both the router and the OpenAPI
document are made from, and the handling every route shares.

Each request is matched, then authenticated (401, 403, 503), then handled; whatever goes
wrong answers JSON in Mistral's error shape: an unknown path under ``/admin/v1/`` 404, a known
path with another method 405 (with ``Allow``), an unexpected exception 500 (logged, never
shown). The routes are served on the main port only (``ops.port`` serves no API route).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from plugins.admin import budgets, keys, records, state, usage
from plugins.admin.access import authenticate
from plugins.admin.openapi import document
from plugins.admin.plumbing import AdminRequest, answer, query, to_the_end
from plugins.auth.permissions import ADMIN_KEYS, ADMIN_RECORDS, ADMIN_STATE, ADMIN_USAGE
from proxy.app import OPS
from proxy.errors import SidecarError

logger = logging.getLogger("mistral_sidecar.admin")

PREFIX = "/admin/v1"
Handler = Callable[[AdminRequest], Awaitable[web.Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the admin API."""

    method: str
    #: The aiohttp path pattern (``{name}`` for a path parameter).
    path: str
    handler: Handler
    #: The admin action the caller's role must grant (``None``: any admin action).
    action: str | None
    #: The OpenAPI ``operationId``.
    operation_id: str


async def me(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/me``: who is calling, and which admin actions its role grants."""
    query(admin.request, ())
    caller = admin.caller
    return answer({"object": "caller", "key_id": caller.key_id, "owner": caller.owner,
                   "org": caller.org, "role": caller.role,
                   "actions": admin.config.roles.admin_actions(caller.role)})


async def openapi(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/openapi.json``: the OpenAPI 3.1 document of this API."""
    query(admin.request, ())
    return answer(document([(r.method, r.path, r.operation_id, r.action) for r in ROUTES]))


ROUTES: tuple[Route, ...] = (
    Route("GET", f"{PREFIX}/openapi.json", openapi, None, "getOpenApi"),
    Route("GET", f"{PREFIX}/me", me, None, "getMe"),
    Route("GET", f"{PREFIX}/roles", keys.list_roles, ADMIN_KEYS, "listRoles"),
    Route("GET", f"{PREFIX}/keys", keys.list_keys, ADMIN_KEYS, "listKeys"),
    Route("POST", f"{PREFIX}/keys", keys.create_key, ADMIN_KEYS, "createKey"),
    Route("GET", f"{PREFIX}/keys/{{key_id}}", keys.get_key, ADMIN_KEYS, "getKey"),
    Route("POST", f"{PREFIX}/keys/{{key_id}}/revoke", keys.revoke_key, ADMIN_KEYS,
          "revokeKey"),
    Route("POST", f"{PREFIX}/keys/{{key_id}}/rotate", keys.rotate_key, ADMIN_KEYS,
          "rotateKey"),
    Route("GET", f"{PREFIX}/usage", usage.usage, ADMIN_USAGE, "getUsage"),
    Route("GET", f"{PREFIX}/budgets", budgets.list_budgets, ADMIN_USAGE, "listBudgets"),
    Route("GET", f"{PREFIX}/agents", records.list_agents, ADMIN_RECORDS, "listAgents"),
    Route("POST", f"{PREFIX}/agents/{{agent_id}}/adopt", records.adopt_agent, ADMIN_RECORDS,
          "adoptAgent"),
    Route("GET", f"{PREFIX}/conversations", records.list_conversations, ADMIN_RECORDS,
          "listConversations"),
    Route("GET", f"{PREFIX}/conversations/{{conversation_id}}", records.get_conversation,
          ADMIN_RECORDS, "getConversation"),
    Route("POST", f"{PREFIX}/conversations/{{conversation_id}}/adopt",
          records.adopt_conversation, ADMIN_RECORDS, "adoptConversation"),
    Route("GET", f"{PREFIX}/state", state.state, ADMIN_STATE, "getState"),
)


def _serve(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            caller = await authenticate(request, route.action)
            handled = route.handler(AdminRequest(request, caller))
            if route.method == "GET":
                return await handled
            return await to_the_end(request.app, handled)
        except SidecarError as error:
            return error.to_response({"Cache-Control": "no-store"})
        except Exception:
            logger.exception("admin %s %s failed", route.method, route.path)
            return SidecarError(500, "The admin API failed to answer; see the sidecar's "
                                "log.").to_response()

    return handle


def _wrong_method(allowed: list[str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return SidecarError(405, f"Method {request.method} is not allowed here (allowed: "
                            f"{', '.join(allowed)}).").to_response(
            {"Allow": ", ".join(allowed)})

    return handle


async def _no_route(request: web.Request) -> web.Response:
    # The path is not repeated back: it may hold anything.
    return SidecarError(404, f"No such route: the admin API's routes are listed in "
                        f"{PREFIX}/openapi.json.", code="no_route").to_response()


def route_defs(app: web.Application) -> list[web.RouteDef]:
    """The aiohttp routes of the admin API, catch-alls last."""
    guard = app[OPS].main_port_only
    defs: list[web.RouteDef] = []
    methods: dict[str, list[str]] = {}
    for route in ROUTES:
        # No implicit HEAD for a GET: it would answer an admin JSON body's headers unchecked.
        extra = {"allow_head": False} if route.method == "GET" else {}
        defs.append(web.route(route.method, route.path, guard(_serve(route)), **extra))
        methods.setdefault(route.path, []).append(route.method)
    for path, allowed in methods.items():
        defs.append(web.route("*", path, guard(_wrong_method(allowed))))
    defs.append(web.route("*", PREFIX, guard(_no_route)))
    defs.append(web.route("*", PREFIX + r"/{tail:[\s\S]*}", guard(_no_route)))
    return defs
