"""The console plugin: a web console at ``/admin/`` over the admin API.

Server-rendered HTML (no JavaScript, nothing loaded from elsewhere, charts drawn as inline
SVG) for an organisation's admins: sign in with an admin key, create, rotate and revoke keys
(a new secret shown once), usage per day, model and owner, a conversation browser reading
entries back as a thread, and the live health of the process.

* Every page is made of admin API calls run in-process (:mod:`.api`): the same
  authentication, role checks and tenancy as ``/admin/v1/``.
* Sessions (:mod:`.sessions`): the key is posted once and kept in this process's memory;
  the browser holds a random session id in an HttpOnly, SameSite=Strict cookie for
  ``/admin/`` (Secure over HTTPS). Forms carry single-use tokens.
* Security headers on every page (:mod:`.web`): a Content-Security-Policy that runs no
  script, no framing, no referrer, no caching.

Needs the ``admin`` plugin before it in the chain.
"""

from __future__ import annotations

import logging

from aiohttp import web

from plugins.console.routes import route_defs
from plugins.console.sessions import SessionStore
from plugins.console.web import CONFIG, SESSIONS, ConsoleConfig
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.settings import Setting

logger = logging.getLogger("mistral_sidecar.console")

#: Pages are admin API calls; the API needs the store and auth plugins before it.
requires = ("admin",)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """How long a console session lasts; whether to trust ``X-Forwarded-Proto``."""
    return [
        Setting("console.session_idle_seconds", "float", 1800.0,
                "A console session ends after this long without a request.", minimum=60),
        Setting("console.session_max_seconds", "float", 43200.0,
                "A console session ends this long after sign-in, however busy.", minimum=60),
        Setting("console.trust_forwarded_proto", "bool", False,
                "Take X-Forwarded-Proto: https from the proxy in front as HTTPS (the console's "
                "cookies are then marked Secure); only behind a proxy that sets it."),
    ]


@hookimpl
def register_routes(app: web.Application) -> list[web.RouteDef]:
    """The console's pages under ``/admin/`` (``/admin/v1/`` stays the admin API's)."""
    settings = app[SETTINGS]
    app[CONFIG] = ConsoleConfig(
        trust_forwarded_proto=bool(settings["console.trust_forwarded_proto"]))
    app[SESSIONS] = SessionStore(float(settings["console.session_idle_seconds"]),
                                 float(settings["console.session_max_seconds"]))
    if int(settings["server.workers"]) > 1:
        logger.warning("console sessions live in one worker's memory: with server.workers "
                       "> 1 an admin may be asked to sign in again when another worker "
                       "answers; serve the console from a sidecar with one worker")
    return route_defs(app)


@hookimpl
def shutdown(app: web.Application) -> None:
    """Forget every session (and the admin keys they hold)."""
    sessions = app.get(SESSIONS)
    if sessions is not None:
        sessions.clear()
