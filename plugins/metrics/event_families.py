"""Which plugin events feed a metric family of their own, declared as data.

These are the emitting plugins' declarations (issue #19, item 2: each plugin declares the
events it emits and the counter they feed). Until the core gathers them from the plugins
through a hook, they are listed here; :class:`plugins.metrics.per_event.EventMetrics` reads
them generically, whoever declares them. Every event, declared or not, is also counted in
``mistral_sidecar_events_total{event}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EVENT_METRICS", "EventMetric", "Label"]


@dataclass(frozen=True, slots=True)
class Label:
    """A label of an event-fed family: the value of event field ``field`` (by default the
    field called ``name``), read through ``values`` where the field's values are not the
    label's, or the constant ``fixed``."""

    name: str
    field: str | None = None
    values: Mapping[Any, str] | None = None
    fixed: str | None = None

    def read(self, fields: Mapping[str, Any]) -> Any:
        """This label's value for an event with ``fields`` (not yet made safe)."""
        if self.fixed is not None:
            return self.fixed
        value = fields.get(self.field or self.name)
        if self.values is None:
            return value
        try:
            return self.values.get(value, value)
        except TypeError:  # a value that cannot be looked up (a list) reads as it is
            return value


@dataclass(frozen=True, slots=True)
class EventMetric:
    """How the events called ``event`` feed family ``mistral_sidecar_<family>``.

    A counter (``<family>_total``) adds 1 per event, or the number in field ``amount``; with
    ``observe``, a histogram observes that field's number instead (``buckets`` required
    unless the family exists already). With ``when``, only events whose field of that name is
    true count.
    """

    event: str
    family: str
    help: str
    labels: tuple[str | Label, ...] = ()
    amount: str | None = None
    when: str | None = None
    observe: str | None = None
    buckets: tuple[float, ...] = ()

    @property
    def label_readers(self) -> tuple[Label, ...]:
        """Every label as a :class:`Label` (a plain name reads the field of that name)."""
        return tuple(label if isinstance(label, Label) else Label(label)
                     for label in self.labels)


EVENT_METRICS: tuple[EventMetric, ...] = (
    EventMetric("ratelimit.decision", "ratelimit_decisions",
                "Rate-limit decisions, by limit (requests, tokens), decision (allowed, "
                "rejected) and scope.",
                ("limit", Label("decision", field="allowed",
                                values={True: "allowed", False: "rejected"}), "scope")),
    # Whether the fallback is active now is the rate-limit plugin's own gauge.
    EventMetric("ratelimit.fallback", "ratelimit_fallbacks",
                "Times the limiter fell back to in-process limiting.", when="active"),
    EventMetric("concurrency.rejected", "concurrency_rejections",
                "Requests refused for lack of a concurrency slot, by scope.", ("scope",)),
    EventMetric("concurrency.rejected", "queue_wait_seconds",
                "Time requests waited for a concurrency slot, by outcome (admitted, rejected).",
                (Label("outcome", fixed="rejected"),), observe="waited_s"),
    EventMetric("retry.attempt", "retries", "Retries, by reason.", ("reason",)),
    EventMetric("breaker.transition", "breaker_transitions", "Circuit-breaker state changes.",
                ("from_state", "to_state")),
    EventMetric("breaker.rejected", "breaker_rejections",
                "Calls the circuit breaker refused, by state.", ("state",)),
    EventMetric("keypool.cooldown", "keypool_cooldowns",
                "Upstream keys put in cool-down, by key index and status.",
                ("key_index", "status")),
    EventMetric("guard.detection", "guard_detections",
                "Input-guard detections, by rule and mode.", ("rule", "mode")),
    EventMetric("auth.denied", "auth_denials",
                "Requests denied by authentication or authorisation.", ("status", "reason")),
    EventMetric("persistence.spooled", "persistence_spooled_records",
                "Records written to the spool file while the database was unusable.",
                amount="records"),
    EventMetric("persistence.replayed", "persistence_replayed_records",
                "Spooled records replayed into the database.", amount="records"),
)
