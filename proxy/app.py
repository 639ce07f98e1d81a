"""The application factory: routes, shared resources and plugin lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from proxy import __version__
from proxy.chain import PluginChain, await_me_maybe
from proxy.errors import SidecarError
from proxy.event_registry import EventRegistry
from proxy.forward import Forwarder
from proxy.operations import OperationIndex
from proxy.ops import OpsAccess
from proxy.settings import ConfigError, Settings

logger = logging.getLogger("mistral_sidecar.app")

SETTINGS = web.AppKey("settings", Settings)
"""The resolved :class:`proxy.settings.Settings`."""
PLUGINS = web.AppKey("plugins", PluginChain)
"""The :class:`proxy.chain.PluginChain` of enabled plugins."""
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
"""The one upstream ``aiohttp.ClientSession`` (keep-alive pool)."""
OPERATIONS = web.AppKey("operations", OperationIndex)
"""The :class:`proxy.operations.OperationIndex` classifying requests."""
FORWARDER = web.AppKey("forwarder", Forwarder)
"""The :class:`proxy.forward.Forwarder` handling proxied requests."""
STARTED = web.AppKey("started", asyncio.Event)
"""Set once every plugin's ``startup`` hook has finished."""
OPS = web.AppKey("ops", OpsAccess)
"""The :class:`proxy.ops.OpsAccess` guarding ``/metrics`` and the details of ``/readyz``."""
EVENTS = web.AppKey("events", EventRegistry)
"""The :class:`proxy.event_registry.EventRegistry` of the events the plugins declare."""


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connector = aiohttp.TCPConnector(
        limit=int(settings["upstream.max_connections"]),
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=30,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # Headers pass through unchanged: the client library must not add its own.
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=float(settings["upstream.connect_timeout_seconds"])),
        raise_for_status=False,
    )
    app[HTTP_SESSION] = session
    app[FORWARDER].session = session
    try:
        yield
    finally:
        await app[FORWARDER].drain_background()
        await session.close()


async def _plugin_lifecycle(app: web.Application) -> AsyncIterator[None]:
    chain = app[PLUGINS]
    started = await _start_plugins(app, chain)
    app[STARTED].set()
    try:
        yield
    finally:
        await _stop_plugins(app, started)


async def _start_plugins(app: web.Application, chain: PluginChain) -> list[str]:
    """Run every ``startup`` in chain order; when one fails, shut down the plugins that had
    started (in reverse) before the error goes on, so nothing they opened is left running."""
    started: list[str] = []
    try:
        for caller in chain.callers("startup"):
            await await_me_maybe(caller(app=app))
            started.append(caller.plugin_name)
    except BaseException:
        await _stop_plugins(app, started)
        raise
    return started


async def _stop_plugins(app: web.Application, started: list[str]) -> None:
    """Run ``shutdown`` in reverse chain order for plugins that started (or implement no
    ``startup``); one that fails is logged and the others still run."""
    chain = app[PLUGINS]
    for caller in reversed(chain.callers("shutdown")):
        has_startup = any(c.plugin_name == caller.plugin_name for c in chain.callers("startup"))
        if has_startup and caller.plugin_name not in started:
            continue
        try:
            await await_me_maybe(caller(app=app))
        except Exception:
            logger.exception("plugin %s failed to shut down", caller.plugin_name)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok", "version": __version__})


async def readiness_checks(app: web.Application) -> dict[str, Any]:
    """Every plugin's readiness report, merged (a failing hook reports its exception's name);
    not redacted (see :meth:`proxy.ops.OpsAccess.redact`)."""
    checks: dict[str, Any] = {}
    for name, result in app[PLUGINS].call_all("readiness", app=app):
        try:
            report = await await_me_maybe(result)
        except Exception as exc:
            report = {name: {"ok": False, "error": type(exc).__name__}}
        if report:
            checks.update(report)
    return checks


async def readyz(request: web.Request) -> web.Response:
    """Readiness: plugins started and their dependencies reachable. The status is open to
    probes; the detail per check only to those :class:`proxy.ops.OpsAccess` allows."""
    app = request.app
    checks: dict[str, Any] = {}
    if not app[STARTED].is_set():
        status, code = "starting", 503
    else:
        checks = await readiness_checks(app)
        ready = all(not isinstance(v, dict) or v.get("ok", True) for v in checks.values())
        status, code = ("ready", 200) if ready else ("unready", 503)
    ops = app[OPS]
    if not ops.shows_details(request):
        return web.json_response({"status": status}, status=code)
    return web.json_response({"status": status, "checks": ops.redact(checks)}, status=code)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition, gathered from the plugins (where ``ops.*`` allow)."""
    app = request.app
    refusal = app[OPS].metrics_refusal(request)
    if refusal is not None:
        return refusal.to_response()
    parts: list[bytes] = []
    try:
        for _name, result in app[PLUGINS].call_all("metrics_exposition", app=app):
            text = await await_me_maybe(result)
            if text:
                parts.append(text if isinstance(text, bytes) else str(text).encode())
    except Exception:
        # A scraper gets an error in the API's shape, never a traceback.
        logger.exception("cannot gather the metrics exposition")
        return SidecarError(500, "The metrics could not be gathered.").to_response()
    return web.Response(body=b"".join(parts),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def not_found(request: web.Request) -> web.Response:
    """Anything outside the API and the health endpoints."""
    # The caller's path is not repeated back: it may hold anything, a key included.
    return SidecarError(404, "No such route: the API is served under /v1/ and /v2/.",
                        code="no_route").to_response()


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` answered as aiohttp does; any other expectation is a
    Mistral-shaped 417 that does not repeat it (aiohttp's own quotes it, and fails on bytes
    that are not UTF-8)."""
    if request.version != aiohttp.HttpVersion11:
        return None
    expect = request.headers.get("Expect", "")
    if expect.isascii() and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The interim response is not the answer's start.
        request.writer.output_size = 0
        return None
    return SidecarError(417, "Only 'Expect: 100-continue' is understood.",
                        type="invalid_request_error", code="expectation_failed").to_response()


#: Paths the core serves, which no plugin route may take (aiohttp prefers an exact path to a
#: pattern, whatever the order routes were added in).
_CORE_PATHS = ("/healthz", "/readyz", "/metrics")
_API_PREFIXES = ("/v1", "/v2")


def _add_plugin_routes(app: web.Application, chain: PluginChain) -> None:
    """Add the routes plugins register (``register_routes``); one that would take a core
    path or an API path stops start-up."""
    problems = []
    for name, routes in chain.call_all("register_routes", app=app):
        for route in routes or ():
            path = str(getattr(route, "path", getattr(route, "prefix", "")))
            if path in _CORE_PATHS or any(path == prefix or path.startswith(prefix + "/")
                                          for prefix in _API_PREFIXES):
                problems.append(f"plugins.chain (SIDECAR_PLUGINS_CHAIN): plugin {name!r} "
                                f"registers the route {path}, which is the sidecar's own")
        if not problems:
            app.router.add_routes(routes or ())
    if problems:
        raise ConfigError(problems)


def create_app(
    settings: Settings,
    chain: PluginChain,
    operations: OperationIndex | None = None,
) -> web.Application:
    """Build the sidecar application for ``settings`` with the plugins in ``chain``."""
    # Connection-level limits (line, field and header sizes, the header timeout) are the
    # door's: proxy.door.DoorConfig.
    app = web.Application()
    app[SETTINGS] = settings
    app[PLUGINS] = chain
    # Before any startup: plugins make their event reporters there.
    app[EVENTS] = EventRegistry.gather(chain, app)
    app[OPERATIONS] = operations or OperationIndex.default()
    app[STARTED] = asyncio.Event()
    app[OPS] = ops = OpsAccess.from_settings(settings)
    forwarder = Forwarder(settings, chain, app[OPERATIONS])
    app[FORWARDER] = forwarder
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_plugin_lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    api = ops.main_port_only(forwarder.handle)
    # [\s\S] rather than '.': a decoded %0A in the path must still reach the forwarder, which
    # refuses it in the API's shape, instead of aiohttp's text/plain 404.
    app.router.add_route("*", r"/v1/{tail:[\s\S]*}", api, expect_handler=expect_continue)
    app.router.add_route("*", r"/v2/{tail:[\s\S]*}", api, expect_handler=expect_continue)
    _add_plugin_routes(app, chain)
    app.router.add_route("*", r"/{tail:[\s\S]*}", not_found, expect_handler=expect_continue)
    return app

