"""A test plugin standing in for the plugins observability watches (auth, persistence, rate
limiting, concurrency, key pool, guard) without needing them.

Request headers drive it:

- ``X-Test-Owner`` / ``X-Test-Role``: ``ctx.identity`` (what the auth plugin sets from a key);
  without them the caller is owner ``team-a``, role ``user``.
- ``X-Test-Emit``: a JSON list of ``[name, fields]`` or ``[name, fields, "background"]``
  events to emit (background ones without the request).
- ``X-Test-Reject``: reject with a 429 of the sidecar's own, as a rate limiter does.
- ``X-Test-Answer``: answer 200 directly, without going upstream.
- ``X-Test-Queued``: seconds the request waited for a concurrency slot (reported as the
  concurrency plugin does, in ``ctx.log["queued_s"]`` and a ``concurrency.admitted`` event).
- ``X-Test-Leak``: log secrets (upstream key, DB password, a bearer token, a URL password)
  to prove they are redacted.

Every request also logs one line from this module (logger ``tests.obs_fakes``), to check that
lines of other modules carry the request id. ``gauges`` reports persistence values and
``readiness`` an unreachable Redis, unless the real persistence plugin is in the chain. It
declares the events of the plugins it stands in for that are not in the chain.

Enable with ``SIDECAR_PLUGINS_CHAIN="...,tests.observability.obs_fakes"``.
"""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.app import PLUGINS, SETTINGS
from proxy.context import Identity, RequestContext
from proxy.errors import SidecarError
from proxy.event_registry import EventSpec
from proxy.events import emit

PLUGIN = "tests.observability.obs_fakes"
log = logging.getLogger("tests.obs_fakes")

GAUGES: list[tuple[str, dict[str, str], float]] = [
    ("persistence_queue_depth", {}, 3.0),
    ("persistence_spool_bytes", {}, 2048.0),
    ("persistence_lag_seconds", {}, 1.5),
    ("concurrency_queue_depth", {"scope": "global"}, 2.0),
    ("persistence_write_failures_total", {}, 2.0),
    # dropped: the metrics plugin's own name, an invalid name, an invalid label name
    ("requests_total", {}, 1000.0),
    ("bad-name", {}, 1.0),
    ("with_bad_label", {"bad-label": "x"}, 1.0),
]
#: The plugins whose events this one emits.
STANDS_IN_FOR = ("auth", "guard", "ratelimit", "concurrency", "persistence", "retry",
                 "breaker", "keypool")


@hookimpl
def sidecar_events(app: web.Application) -> list[EventSpec]:
    """The events of the plugins it stands in for, as they declare them, unless they are in
    the chain to declare them themselves."""
    chain = app[PLUGINS].names
    return [spec for name in STANDS_IN_FOR if name not in chain
            for spec in importlib.import_module(f"plugins.{name}").sidecar_events()]


@hookimpl
def on_request(ctx: RequestContext) -> web.StreamResponse | None:
    """Identify, emit, leak, reject or answer as the headers ask."""
    headers = ctx.request.headers
    if ctx.identity is None:
        ctx.identity = Identity(key_id="key_test_1",
                                owner=headers.get("X-Test-Owner", "team-a"),
                                role=headers.get("X-Test-Role", "user"))
    log.info("fake plugin saw %s", ctx.operation_name)
    spec = headers.get("X-Test-Emit")
    if spec:
        for item in json.loads(spec):
            name, fields = item[0], item[1]
            background = len(item) > 2 and item[2] == "background"
            emit(ctx.app, name, None if background else ctx, **fields)
    if headers.get("X-Test-Leak"):
        settings = ctx.app[SETTINGS]
        log.warning("upstream key %s, db password %s", ctx.upstream_api_key,
                    settings["db.password"])
        log.warning("header was Authorization: Bearer abcdefghijklmnop.qrstuv",
                    extra={"url": "postgresql://sidecar:s3cret-url-pw@db:5432/x",
                           "nested": {"key": str(ctx.upstream_api_key)}})
        try:
            raise RuntimeError(f"failed with key {ctx.upstream_api_key}")
        except RuntimeError:
            log.exception("an exception mentioning the key")
    if headers.get("X-Test-Queued"):
        waited = float(headers["X-Test-Queued"])
        ctx.log["queued_s"] = waited  # as the concurrency plugin does
        emit(ctx.app, "concurrency.admitted", ctx, waited_s=waited)
    if headers.get("X-Test-Reject"):
        log.warning("rejecting for the test")
        raise SidecarError(429, "Test rate limit.", headers={"Retry-After": "1"})
    if headers.get("X-Test-Answer"):
        return web.json_response({"answered": True})
    return None


def _standing_in(app: web.Application) -> bool:
    """Whether the real persistence plugin is absent (then this one reports in its place)."""
    return "persistence" not in app[PLUGINS].names


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]]:
    """Persistence and concurrency values as those plugins would report them."""
    return list(GAUGES) if _standing_in(app) else []


@hookimpl
def readiness(app: web.Application) -> dict[str, Any]:
    """A Redis that does not answer."""
    if not _standing_in(app):
        return {}
    return {"redis": {"ok": False, "latency_ms": 2.0, "error": "ConnectionError"}}
