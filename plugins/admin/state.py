"""``/admin/v1/state``: the live state of this process as its plugins report it, through
the ``readiness`` and ``gauges`` hooks (breaker state, limiter backend and fallback, spool
size and lag, key pool cooldowns ...), stripped of configured secrets as ``/readyz`` is.

It is the state of the process that answers, not of the organisation: every organisation
shares the upstream, its breaker and its key pool. Other replicas have their own.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from plugins.admin.plumbing import AdminRequest, answer, query
from proxy.app import OPS, PLUGINS, STARTED, readiness_checks

logger = logging.getLogger("mistral_sidecar.admin")


def _gauges(app: web.Application) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for caller in app[PLUGINS].callers("gauges"):
        try:
            reported = caller(app=app) or ()
        except Exception:
            # One broken plugin must not hide the others' state.
            logger.exception("plugin %s failed to report its gauges", caller.plugin_name)
            continue
        found.extend({"plugin": caller.plugin_name, "name": name, "labels": dict(labels),
                      "value": value} for name, labels, value in reported)
    return found


async def state(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/state``: ``status`` as ``/readyz`` says it, each plugin's readiness
    report (``checks``) and current values (``gauges``)."""
    query(admin.request, ())
    app = admin.app
    checks: dict[str, Any] = {}
    if not app[STARTED].is_set():
        status = "starting"
    else:
        checks = await readiness_checks(app)
        ready = all(not isinstance(v, dict) or v.get("ok", True) for v in checks.values())
        status = "ready" if ready else "unready"
    return answer({"object": "state", "status": status,
                   "checks": app[OPS].redact(checks),
                   "gauges": app[OPS].redact(_gauges(app))})
