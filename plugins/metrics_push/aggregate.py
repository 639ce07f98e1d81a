"""One flush interval's worth of series, kept in memory until the pusher takes it.

Finished requests add points (:meth:`Aggregate.add`) on the event loop; the pusher swaps the
aggregate for an empty one (:meth:`Aggregate.take`) and sends the :class:`Batch` from its own
thread. Counts are summed, gauges keep their last value and distributions keep their values
(a uniform sample past ``max_samples``), so memory stays bounded whatever the traffic: at
most ``max_series`` series per interval, the points of any further series are dropped and
counted.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

__all__ = ["Aggregate", "Batch", "Kind", "Metric", "Series", "Tags"]

#: A series' tags, as ``(key, value)`` pairs in a fixed order (also its identity).
Tags = tuple[tuple[str, str], ...]


class Kind(enum.StrEnum):
    """How a metric's points combine within an interval (and the Datadog type it is sent
    as)."""

    #: Summed over the interval (requests, tokens, cost).
    COUNT = "count"
    #: The last value of the interval.
    GAUGE = "gauge"
    #: Every value (a sample of them past the bound): percentiles are computed by the receiver.
    DISTRIBUTION = "distribution"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric the plugin sends: its name, kind, CloudWatch unit and meaning."""

    name: str
    kind: Kind
    unit: str
    help: str


@dataclass(slots=True)
class Series:
    """The points one metric with one set of tags gathered in an interval."""

    metric: Metric
    tags: Tags
    #: A count's sum or a gauge's last value.
    value: float = 0.0
    #: A distribution's values (at most the aggregate's ``max_samples``).
    values: list[float] = field(default_factory=list)
    #: Points added, sampled-out distribution values included.
    points: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    """What an interval gathered: its series, when it started and ended (Unix seconds), and
    the points dropped because the interval already held ``max_series`` series."""

    series: list[Series]
    started: float
    ended: float
    dropped: int = 0


class Aggregate:
    """The series of the current interval (used from the event loop only)."""

    def __init__(self, started: float, *, max_series: int = 10_000,
                 max_samples: int = 1_000) -> None:
        """Start the first interval at ``started`` (Unix seconds)."""
        self.max_series = max_series
        self.max_samples = max_samples
        self._series: dict[tuple[str, Tags], Series] = {}
        self._started = started
        self._dropped = 0
        self._random = random.Random()

    def __len__(self) -> int:
        return len(self._series)

    def add(self, metric: Metric, tags: Tags, value: float) -> None:
        """Add one point of ``metric`` with ``tags``."""
        key = (metric.name, tags)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                self._dropped += 1
                return
            series = self._series[key] = Series(metric, tags)
        series.points += 1
        kind = metric.kind
        if kind is Kind.COUNT:
            series.value += value
        elif kind is Kind.GAUGE:
            series.value = value
        elif len(series.values) < self.max_samples:
            series.values.append(value)
        else:
            # Reservoir sampling: every value of the interval is kept with equal chance.
            slot = self._random.randrange(series.points)
            if slot < self.max_samples:
                series.values[slot] = value

    def take(self, now: float) -> Batch:
        """The interval that ends ``now``; a new one starts, empty."""
        batch = Batch(list(self._series.values()), self._started, now, self._dropped)
        self._series = {}
        self._started = now
        self._dropped = 0
        return batch
