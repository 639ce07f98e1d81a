"""The admin plugin: an HTTP API under ``/admin/v1/`` for one organisation's keys, usage,
agents, conversations and the live state of the sidecar, described at
``/admin/v1/openapi.json``.

* Callers present sidecar keys, checked by the auth plugin's authenticator; each route needs
  an admin action of ``auth.roles`` (:mod:`.access`); the built-in ``admin`` role grants all.
* Everything is scoped to the caller's organisation, with the proxy's tenancy rules: what
  belongs to another organisation answers 404, as an unknown id does.
* Changes go through the code the CLI uses (``keys create/revoke/rotate``, ``adopt``), and
  each leaves one line on the ``mistral_sidecar.audit`` logger (:mod:`.audit`).
* Errors are JSON in Mistral's shape.

Needs ``store`` and ``auth`` before it in the chain; usage and conversations are the records
the ``persistence`` plugin writes (and cost the ``prices`` plugin's), live state what every
plugin reports through ``readiness`` and ``gauges``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from plugins.admin.access import Roles
from plugins.admin.audit import AUDIT_LOGGER
from plugins.admin.plumbing import ADMIN, AdminConfig, finish_detached
from plugins.admin.routes import ROUTES, route_defs
from plugins.auth.permissions import ADMIN_ACTIONS
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.settings import Setting

__all__ = ["ADMIN", "ADMIN_ACTIONS", "AUDIT_LOGGER", "ROUTES"]

#: Keys, ownership and records live in the store's database; callers are the auth plugin's.
requires = ("store", "auth")

_PREVIOUS_AUDIT_LEVEL = web.AppKey("admin_previous_audit_level", int)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """How long an admin request may wait for the database."""
    return [
        Setting("admin.query_timeout_seconds", "float", 10.0,
                "An admin API request whose database work takes longer than this answers "
                "503 (usage reports over a long period are the slow ones).", minimum=0.1),
    ]


@hookimpl
def register_routes(app: web.Application) -> list[web.RouteDef]:
    """Every route of ``/admin/v1/`` (catch-alls answering 404 and 405 included)."""
    return route_defs(app)


@hookimpl
def startup(app: web.Application) -> None:
    """Read the settings the handlers need; let audit lines through whatever ``LOG_LEVEL``
    says."""
    settings = app[SETTINGS]
    app[ADMIN] = AdminConfig(
        query_timeout=float(settings["admin.query_timeout_seconds"]),
        unowned_org=str(settings["auth.unowned_org"]),
        roles=Roles.from_settings(settings["auth.roles"], settings["auth.unmapped_roles"]))
    app[_PREVIOUS_AUDIT_LEVEL] = AUDIT_LOGGER.level
    if not AUDIT_LOGGER.isEnabledFor(logging.INFO):
        AUDIT_LOGGER.setLevel(logging.INFO)


@hookimpl
async def shutdown(app: web.Application) -> None:
    """Finish the changes whose callers hung up; put the audit logger's level back."""
    await finish_detached(app)
    previous = app.get(_PREVIOUS_AUDIT_LEVEL)
    if previous is not None:
        AUDIT_LOGGER.setLevel(previous)
