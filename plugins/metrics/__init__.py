"""The metrics plugin: Prometheus metrics on ``/metrics``.

Everything is named ``mistral_sidecar_<what>_<unit>`` and labelled only with bounded values:
operation names (``"unknown"`` for paths outside the API spec), methods, statuses, models,
event names. Never ids or raw paths. Values that come from upstream answers, callers or
plugins pass through :func:`safe_label` and :class:`BoundedValues`
(:mod:`plugins.metrics.labels`).

Every family lives in a registry kept on the application (two sidecars in one process never
share counters) and is updated with prometheus_client's own ``labels(...).inc()`` and
``.observe()``. Sources:

- each request, once, when it ends (``on_end``): requests, durations, upstream time,
  attempts, tokens, time to first token (the core's ``ctx.timing.first_token``) and tokens/s
  of streams, conversations, errors (:mod:`plugins.metrics.per_request`);
- the requests in flight: the core's count, read at scrape time (several workers: each
  counts its requests in at ``on_request`` and out at ``on_end``);
- plugin events (``on_event``): every event counted in ``mistral_sidecar_events_total{event}``,
  and added to the families its plugin declares it feeds (``sidecar_events``, read from the
  core's registry: :mod:`plugins.metrics.per_event`);
- the other plugins' ``gauges`` hook and the ``readiness`` checks, read at scrape time
  (:mod:`plugins.metrics.scrape`).

Several worker processes: each worker starts with ``PROMETHEUS_MULTIPROC_DIR`` naming one
empty directory they share (``serve --workers N`` makes one); prometheus_client then keeps
the values in files there and ``/metrics`` of any worker reports the sum over all of them
(the requests in flight of the workers still running). Gauges from other plugins' ``gauges``
hook and dependency health describe the worker that answered the scrape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from plugins.metrics.labels import OTHER, BoundedValues, safe_label
from proxy import hookimpl
from proxy.app import FORWARDER, SETTINGS
from proxy.context import RequestContext
from proxy.settings import Setting

# prometheus_client chooses between in-process and multi-process storage when it is first
# imported, by whether PROMETHEUS_MULTIPROC_DIR is set. `serve --workers N` sets it after
# the CLI has imported the plugins and before it forks the workers, so this module imports
# nothing of prometheus_client: the workers import it at start-up (plugins.metrics.state).
if TYPE_CHECKING:
    from plugins.metrics.state import MetricsState

__all__ = ["METRICS", "OTHER", "BoundedValues", "safe_label"]

logger = logging.getLogger("mistral_sidecar.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Default of the ignored ``metrics.flush_seconds``.
_FLUSH_DEFAULT = 0.5

METRICS: web.AppKey[MetricsState] = web.AppKey("metrics_state")
"""The application's :class:`plugins.metrics.state.MetricsState`."""


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Metrics settings."""
    return [
        Setting("metrics.owner_label", "bool", False,
                "Also label token counts by owner (one series per owner and model: enable "
                "only with a bounded number of owners)."),
        Setting("metrics.flush_seconds", "float", _FLUSH_DEFAULT,
                "Deprecated, ignored: each request is recorded as it ends. Accepted so that "
                "configurations that set it still load.", minimum=0),
        Setting("metrics.readiness", "bool", True,
                "Run the readiness checks on each scrape and export dependency health."),
        Setting("metrics.readiness_timeout_seconds", "float", 2.0,
                "Longest wait for each readiness check during a scrape.", minimum=0.01),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Build the registry and its families."""
    from plugins.metrics.state import MetricsState

    settings = app[SETTINGS]

    def in_flight() -> float:
        # The core counts the requests it is handling (none without its forwarder).
        forwarder = app.get(FORWARDER)
        return 0 if forwarder is None else forwarder.in_flight

    if settings["metrics.flush_seconds"] != _FLUSH_DEFAULT:
        logger.warning("metrics.flush_seconds (SIDECAR_METRICS_FLUSH_SECONDS) is deprecated "
                       "and ignored: each request is recorded as it ends")
    app[METRICS] = MetricsState(
        app,
        owner_label=bool(settings["metrics.owner_label"]),
        readiness=bool(settings["metrics.readiness"]),
        readiness_timeout=float(settings["metrics.readiness_timeout_seconds"]),
        multiproc_dir=os.environ.get(MULTIPROC_ENV) or None,
        in_flight=in_flight,
    )


@hookimpl
def shutdown(app: web.Application) -> None:
    """In multi-process mode, drop this worker's live gauges from the shared directory."""
    state = app.get(METRICS)
    if state is not None:
        state.close()


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """The request is in flight from now on (counted here with several workers)."""
    ctx.app[METRICS].requests.started(ctx)


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Record the request, however it ended."""
    ctx.app[METRICS].requests.ended(ctx)


@hookimpl
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """Count a plugin event (and add it to the family it feeds, if any)."""
    # An event reported before this plugin started (by a plugin earlier in the chain, at
    # its own start-up) has nothing to be counted in yet.
    state = app.get(METRICS)
    if state is not None:
        state.events.record(name, fields)


@hookimpl
def metrics_exposition(app: web.Application) -> Awaitable[bytes]:
    """This plugin's part of ``/metrics``."""
    return app[METRICS].exposition(app)
