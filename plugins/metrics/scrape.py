"""What ``/metrics`` reads at scrape time rather than as it happens: the other plugins'
``gauges`` hook and the ``readiness`` checks (dependency health), as custom collectors."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from plugins.metrics.labels import safe_label
from plugins.metrics.per_request import PREFIX
from proxy.app import PLUGINS
from proxy.chain import await_me_maybe

__all__ = ["Health", "HealthCollector", "PluginGaugeCollector"]

logger = logging.getLogger("mistral_sidecar.metrics")

_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Endings of the sample names a family exposes (a counter's running total, a histogram's
#: buckets ...): a plugin's gauge must not take a name with one of the families' names.
_SAMPLE_SUFFIX = re.compile(r"_(?:total|created|bucket|count|sum|info|gcount|gsum)$")


class PluginGaugeCollector(Collector):
    """Exports every entry of the ``gauges`` hook as gauge ``mistral_sidecar_<name>``.

    Names ending in ``_total`` (running totals) become counters. Names that are not valid,
    or that this plugin's own families (``families``, their full names) use, are dropped with
    one warning each.
    """

    def __init__(self, app: web.Application, families: set[str]) -> None:
        self.app = app
        self.families = families
        self.warned: set[str] = set()

    def describe(self) -> list[Metric]:
        """Nothing up front: the names are only known at scrape time."""
        return []

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message, *args)

    def collect(self) -> Iterable[Metric]:
        """Call every plugin's ``gauges`` hook and group the values by name."""
        families: dict[str, Metric] = {}
        for plugin, result in self.app[PLUGINS].call_all("gauges", app=self.app):
            for entry in result or ():
                try:
                    name, labels, value = entry
                    full = PREFIX + str(name)
                    if (not _NAME_RE.match(full) or full in self.families
                            or _SAMPLE_SUFFIX.sub("", full) in self.families):
                        self._warn_once(f"name:{plugin}:{name}", "plugin %s reports gauge %r, "
                                        "which is not a valid or free metric name", plugin, name)
                        continue
                    clean = {str(k): safe_label(v) for k, v in (labels or {}).items()}
                    if not all(_LABEL_RE.match(k) and not k.startswith("__") for k in clean):
                        self._warn_once(f"labels:{plugin}:{name}", "plugin %s reports gauge %r "
                                        "with invalid label names", plugin, name)
                        continue
                    # A running total reported as a value is exposed as the counter it is.
                    base, kind = ((full[:-6], "counter") if full.endswith("_total")
                                  else (full, "gauge"))
                    family = families.get(base)
                    if family is None:
                        family = families[base] = Metric(
                            base, f"Reported by the {plugin} plugin.", kind)
                    family.add_sample(full, clean, float(value))
                except (TypeError, ValueError):
                    self._warn_once(f"entry:{plugin}", "plugin %s reports a malformed gauge "
                                    "entry %r", plugin, entry)
        return list(families.values())


@dataclass
class Health:
    """The latest readiness report, refreshed before each scrape."""

    checks: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    async def refresh(self, app: web.Application, seconds_each: float) -> None:
        """Ask every plugin's ``readiness`` hook, each within ``seconds_each``."""
        checks: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, result in app[PLUGINS].call_all("readiness", app=app):
            try:
                async with asyncio.timeout(seconds_each):
                    report = await await_me_maybe(result)
            except Exception as exc:
                errors[name] = type(exc).__name__
                continue
            if isinstance(report, dict):
                checks.update(report)
        self.checks = checks
        self.errors = errors


#: Names :class:`HealthCollector` exposes.
HEALTH_NAMES = frozenset(PREFIX + name for name in ("dependency_up",
                                                    "dependency_latency_seconds", "ready"))


class HealthCollector(Collector):
    """``mistral_sidecar_dependency_up`` and latency from the last readiness report."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def describe(self) -> list[Metric]:
        """Names are fixed, but values appear only after the first refresh."""
        return []

    def collect(self) -> Iterable[Metric]:
        """One sample per dependency the readiness hooks reported."""
        up = Metric(PREFIX + "dependency_up",
                    "1 when the dependency answered its last readiness check, else 0.", "gauge")
        latency = Metric(PREFIX + "dependency_latency_seconds",
                         "Duration of the dependency's last readiness check.", "gauge")
        ready = True
        checks = self.health.checks
        seen: set[str] = set()

        def add(name: str, check: dict[str, Any]) -> bool:
            ok = bool(check.get("ok", True))
            labels = {"dependency": safe_label(name)}
            up.add_sample(up.name, labels, 1.0 if ok else 0.0)
            ms = check.get("latency_ms")
            if isinstance(ms, int | float) and not isinstance(ms, bool):
                latency.add_sample(latency.name, labels, float(ms) / 1000)
            seen.add(name)
            return ok

        for name, check in checks.items():
            if isinstance(check, dict):
                ready = add(name, check) and ready
                # A check may report the services behind it (the rate limiter's Redis, which
                # is down while the limiter itself stays ok in fail-open mode).
                for inner, detail in check.items():
                    if isinstance(detail, dict) and "ok" in detail:
                        label = inner if inner not in checks and inner not in seen \
                            else f"{name}.{inner}"
                        add(label, detail)
        for name in self.health.errors:
            up.add_sample(up.name, {"dependency": safe_label(name)}, 0.0)
            ready = False
        overall = Metric(PREFIX + "ready", "1 when /readyz would answer 200, else 0.", "gauge")
        overall.add_sample(overall.name, {}, 1.0 if ready else 0.0)
        return [up, latency, overall]
