"""One application's metrics: its registry and families, and the exposition ``/metrics``
serves (this process's families, or every worker's in multi-process mode)."""

from __future__ import annotations

import os
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest, multiprocess

from plugins.metrics.per_event import EventMetrics
from plugins.metrics.per_request import PREFIX, RequestMetrics
from plugins.metrics.scrape import HEALTH_NAMES, Health, HealthCollector, PluginGaugeCollector
from proxy import __version__
from proxy.app import SETTINGS
from proxy.events import registry as event_registry

__all__ = ["MetricsState"]


class MetricsState:
    """Every metric family of one application, in a registry of its own (two sidecars in one
    process never share counters)."""

    def __init__(self, app: web.Application, *, owner_label: bool, readiness: bool,
                 readiness_timeout: float, multiproc_dir: str | None,
                 in_flight: Callable[[], float]) -> None:
        """``in_flight`` reads the number of requests this process is handling."""
        self.registry = CollectorRegistry()
        # Several workers: each counts its requests in and out of its own file, since a
        # scrape can only read the others' files.
        self.requests = RequestMetrics(self.registry, owner_label=owner_label,
                                       in_flight=None if multiproc_dir else in_flight)
        # Only the families of the events the plugins in the chain declare.
        self.events = EventMetrics(self.registry, event_registry(app))
        # The deployment's labels live on this info series (join on it), not on every series.
        Gauge(PREFIX + "build_info", "Always 1; the labels say what runs, and where "
              "(ENVIRONMENT).", ("version", "environment"), registry=self.registry,
              multiprocess_mode="max",
              ).labels(__version__, str(app[SETTINGS]["environment"])).set(1)
        self.readiness = readiness
        self.readiness_timeout = readiness_timeout
        self.health = Health()
        self.multiproc_dir = multiproc_dir
        self.exposed = self.registry
        if multiproc_dir is not None:
            # prometheus_client keeps every worker's values in files there and sums them.
            self.exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposed, path=multiproc_dir)
        own = {family.name for family in self.registry.collect()} | HEALTH_NAMES
        self.exposed.register(PluginGaugeCollector(app, own))
        if readiness:
            self.exposed.register(HealthCollector(self.health))

    async def exposition(self, app: web.Application) -> bytes:
        """The text exposition, dependency health refreshed first when it is exported."""
        if self.readiness:
            await self.health.refresh(app, self.readiness_timeout)
        return generate_latest(self.exposed)

    def close(self) -> None:
        """In multi-process mode, take this worker's live gauges out of the shared files."""
        if self.multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiproc_dir)
