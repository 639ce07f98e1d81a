"""Plugin events as metrics, read generically: every event counted by name, and each one
added to the families its declaration names (:class:`proxy.event_registry.EventMetric`, from
the plugins' ``sidecar_events``)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from plugins.metrics.children import Children
from plugins.metrics.labels import BoundedValues
from plugins.metrics.per_request import PREFIX
from proxy.event_registry import EventMetric, EventSpec

__all__ = ["EventMetrics"]

#: Distinct values each event-fed label keeps (event fields come from plugins).
EVENT_LABEL_LIMIT = 50
#: Distinct combinations of raw field values a feed remembers the child of.
_REMEMBERED = 1000

F = TypeVar("F", Counter, Histogram)


class _Feed(Generic[F]):
    """One declaration bound to its family, with a bound on each of its labels.

    The limiter reports a decision or two per request: the child for a decision's fields is
    remembered by their raw values, so that a repeated one skips reading and bounding them.
    """

    __slots__ = ("declaration", "family", "fields", "guards", "labels", "remembered")

    def __init__(self, declaration: EventMetric, family: Children[F]) -> None:
        self.declaration = declaration
        self.family: Children[F] = family
        self.labels = declaration.label_readers
        self.guards = tuple(BoundedValues(EVENT_LABEL_LIMIT) for _ in self.labels)
        #: The fields the labels read.
        self.fields = tuple(label.field or label.name for label in self.labels
                            if label.fixed is None)
        self.remembered: dict[Hashable, F] = {}

    def record(self, fields: Mapping[str, Any]) -> None:
        """Add one event with ``fields`` to the family, if it counts."""
        when = self.declaration.when
        if when is None or fields.get(when):
            self.add(self._child(fields), fields)

    def add(self, child: F, fields: Mapping[str, Any]) -> None:
        """What one event adds to ``child``."""
        raise NotImplementedError

    def _child(self, fields: Mapping[str, Any]) -> F:
        key = tuple(map(fields.get, self.fields))
        try:
            child = self.remembered.get(key)
        except TypeError:  # a field value that cannot be a key (a list): not remembered
            return self.family(*self._values(fields))
        if child is None:
            child = self.family(*self._values(fields))
            if len(self.remembered) < _REMEMBERED:
                self.remembered[key] = child
        return child

    def _values(self, fields: Mapping[str, Any]) -> list[str]:
        return [guard(label.read(fields)) for guard, label in zip(self.guards, self.labels,
                                                                  strict=True)]


class _CounterFeed(_Feed[Counter]):
    __slots__ = ()

    def add(self, child: Counter, fields: Mapping[str, Any]) -> None:
        """One, or the number in the declared ``amount`` field."""
        amount = self.declaration.amount
        child.inc(_amount(fields.get(amount)) if amount else 1.0)


class _HistogramFeed(_Feed[Histogram]):
    __slots__ = ()

    def add(self, child: Histogram, fields: Mapping[str, Any]) -> None:
        """The number in the declared ``observe`` field, if there is one."""
        value = fields.get(self.declaration.observe or "")
        if isinstance(value, (int, float)):
            child.observe(value)


class EventMetrics:
    """``mistral_sidecar_events_total{event}`` and the families events are declared to feed."""

    def __init__(self, registry: CollectorRegistry, declarations: Iterable[EventSpec]) -> None:
        """Create in ``registry`` each family the ``declarations`` name (the core has checked
        that the events feeding one family agree on its kind and labels)."""
        self.events = Children(Counter(PREFIX + "events", "Plugin events, by name.",
                                       ("event",), registry=registry))
        self.names = BoundedValues(EVENT_LABEL_LIMIT)
        counters: dict[str, Children[Counter]] = {}
        histograms: dict[str, Children[Histogram]] = {}
        self.feeds: dict[str, list[_Feed[Any]]] = {}
        for spec in declarations:
            for declared in spec.metrics:
                labels = tuple(label.name for label in declared.label_readers)
                name = PREFIX + declared.family
                feed: _Feed[Any]
                if declared.observe is None:
                    counter = counters.get(declared.family)
                    if counter is None:
                        counter = counters[declared.family] = Children(Counter(
                            name, declared.help, labels, registry=registry))
                    feed = _CounterFeed(declared, counter)
                else:
                    histogram = histograms.get(declared.family)
                    if histogram is None:
                        if not declared.buckets:
                            raise ValueError(f"event {spec.name}: {name} needs buckets")
                        histogram = histograms[declared.family] = Children(Histogram(
                            name, declared.help, labels, buckets=declared.buckets,
                            registry=registry))
                    feed = _HistogramFeed(declared, histogram)
                self.feeds.setdefault(spec.name, []).append(feed)
        #: By event name: its ``events_total`` child and its feeds.
        self._by_name: dict[str, tuple[Counter, tuple[_Feed[Any], ...]]] = {}

    def record(self, name: str, fields: Mapping[str, Any]) -> None:
        """Count one event called ``name`` with ``fields``."""
        found = self._by_name.get(name)
        if found is None:
            found = (self.events(self.names(name)), tuple(self.feeds.get(name, ())))
            if len(self._by_name) < _REMEMBERED:
                self._by_name[name] = found
        count, feeds = found
        count.inc()
        for feed in feeds:
            feed.record(fields)


def _amount(value: Any) -> float:
    """A positive number of things an event reports, else 1 (the event itself)."""
    return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0
