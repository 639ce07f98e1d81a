"""The metrics_push plugin: the key series pushed to Datadog and CloudWatch, as the deployment
guide's ``MetricsCollector`` does, without an exporter in the application.

- **Datadog**, with Datadog's Python library (``datadog``): to a local Agent's DogStatsD when
  ``SIDECAR_DATADOG_STATSD_HOST`` names one, else, with ``DATADOG_API_KEY``, straight to the
  HTTP API of ``DATADOG_SITE`` (no Agent needed).
- **CloudWatch**, with ``SIDECAR_CLOUDWATCH_EMF=true``: Embedded Metric Format lines on
  standard output, which CloudWatch Logs turns into metrics (ECS with ``awslogs``, Lambda).

Series (:mod:`.series`): requests, errors, latency, tokens, cost and conversation entries per
agent (the guide's ``mistral.conversation``), tagged with operation, model, status class and
organisation, plus ``service``, ``env`` (``ENVIRONMENT``) and ``version``.

Never on the request path: ``on_end`` adds the request's points to an in-memory aggregate
(:mod:`.aggregate`, bounded); a background task (:mod:`.pusher`) sends each interval's batch
from a thread of its own, and the last partial one at shutdown. A receiver that is down or
slow costs requests nothing: the batch is dropped, reported once as the
``metrics_push.send_failed`` event (a warning line and a counter), and the next interval
tries again. Configured for no sink, the plugin stays idle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import web

from plugins.metrics_push.aggregate import Aggregate
from plugins.metrics_push.config import build_sinks, declared, problems
from plugins.metrics_push.pusher import Pusher
from plugins.metrics_push.series import CATALOG, RequestSeries
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emitter
from proxy.settings import Setting, Settings

__all__ = ["CATALOG", "METRICS_PUSH", "MetricsPush"]

logger = logging.getLogger("mistral_sidecar.metrics_push")


@dataclass
class MetricsPush:
    """The plugin's state on the application (only when a sink is configured)."""

    series: RequestSeries
    pusher: Pusher
    #: Longest wait for the last batch at shutdown.
    shutdown_timeout: float


METRICS_PUSH = web.AppKey("metrics_push", MetricsPush)

#: The events this plugin emits.
EVENTS = (
    EventSpec("metrics_push.send_failed",
              "A batch of series could not be delivered to a sink (datadog, cloudwatch): it "
              "is dropped, and the next interval sends fresh data.",
              fields=("sink", "error", "series"), level="WARNING",
              metrics=(EventMetric("metrics_push_failures",
                                   "Batches a sink could not take, by sink.", ("sink",)),
                       EventMetric("metrics_push_dropped_series",
                                   "Series dropped with the batches a sink could not take.",
                                   ("sink",), amount="series"))),
    EventSpec("metrics_push.overflow",
              "An interval held the most series it may keep: points of further series were "
              "dropped.", fields=("points",), level="WARNING",
              metrics=(EventMetric("metrics_push_overflow_points",
                                   "Points dropped because an interval held too many series.",
                                   amount="points"),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Datadog, CloudWatch EMF and the flush interval."""
    return declared()


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """Settings that only work together."""
    return problems(settings)


@hookimpl
def startup(app: web.Application) -> Awaitable[None] | None:
    """Start the pusher when a sink is configured."""
    settings = app[SETTINGS]
    sinks = build_sinks(settings)
    if not sinks:
        return None

    async def start() -> None:
        aggregate = Aggregate(time.time())
        failed = emitter(app, "metrics_push.send_failed")
        overflow = emitter(app, "metrics_push.overflow")

        def report_failure(sink: str, error: str, series: int) -> None:
            if failed is not None:
                failed(None, {"sink": sink, "error": error, "series": series})

        def report_overflow(points: int) -> None:
            if overflow is not None:
                overflow(None, {"points": points})

        interval = float(settings["metrics_push.flush_seconds"])
        pusher = Pusher(aggregate, sinks, interval, failed=report_failure,
                        overflow=report_overflow)
        pusher.start()
        app[METRICS_PUSH] = MetricsPush(
            RequestSeries(aggregate, owner_tag=bool(settings["metrics_push.owner_tag"])),
            pusher, shutdown_timeout=float(settings["datadog.timeout_seconds"]) + 1.0)
        logger.info("metrics push: %s every %g s", ", ".join(s.name for s in sinks), interval)

    return start()


@hookimpl
def shutdown(app: web.Application) -> Awaitable[None] | None:
    """Send the last partial interval, then stop."""
    state = app.get(METRICS_PUSH)
    if state is None:
        return None
    return state.pusher.stop(state.shutdown_timeout)


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Add the request's points to the current interval (in memory, nothing sent)."""
    state = ctx.app.get(METRICS_PUSH)
    if state is not None:
        state.series.record(ctx)
