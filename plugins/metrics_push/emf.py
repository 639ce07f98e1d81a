"""CloudWatch Embedded Metric Format: each batch as JSON lines on standard output.

CloudWatch Logs turns a log event that is a JSON object with an ``_aws`` member into metrics
(the EMF specification), so on ECS with the ``awslogs`` driver, or on Lambda, the lines need
no agent and no API call. One line per set of tags per interval: its dimensions are the
constant ones (service, environment) and the series' tags, each a top-level member; its
metrics are every series with those tags, a count or gauge as a number, a distribution as an
array of at most 100 values (more make more lines). ``version`` rides along as a property,
searchable in the logs but no dimension (a new metric per release would cost money).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from plugins.metrics_push.aggregate import Batch, Kind, Metric, Series, Tags

__all__ = ["MAX_METRICS", "MAX_VALUES", "EmfSink", "render"]

#: The specification's limits: metrics per directive, values per metric.
MAX_METRICS = 100
MAX_VALUES = 100


def render(batch: Batch, namespace: str, dimensions: Mapping[str, str],
           properties: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The EMF documents of ``batch``: ``dimensions`` are added to every dimension set and
    ``properties`` to every document."""
    groups: dict[Tags, list[Series]] = {}
    for series in batch.series:
        groups.setdefault(series.tags, []).append(series)
    timestamp = int(batch.ended * 1000)
    documents = []
    for tags, members in groups.items():
        keys = [*dimensions, *(key for key, _value in tags)]
        for values in _documents(members):
            documents.append({
                "_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [keys],
                    "Metrics": [{"Name": metric.name, "Unit": metric.unit}
                                for metric in values],
                }]},
                **dimensions, **dict(tags), **properties,
                **{metric.name: value for metric, value in values.items()},
            })
    return documents


def _documents(members: list[Series]) -> list[dict[Metric, Any]]:
    """The metric values of one set of tags, split into documents within the limits."""
    documents: list[dict[Metric, Any]] = []
    # Distributions longer than MAX_VALUES continue on further documents.
    for series in members:
        if series.metric.kind is Kind.DISTRIBUTION:
            parts: list[Any] = [series.values[i:i + MAX_VALUES]
                                for i in range(0, len(series.values), MAX_VALUES)]
        else:
            parts = [series.value]
        for index, part in enumerate(parts):
            while len(documents) <= index:
                documents.append({})
            documents[index][series.metric] = part
    split: list[dict[Metric, Any]] = []
    for values in documents:
        items = list(values.items())
        split.extend(dict(items[i:i + MAX_METRICS]) for i in range(0, len(items), MAX_METRICS))
    return split


class EmfSink:
    """Writes each batch as EMF lines to standard output."""

    name = "cloudwatch"

    def __init__(self, namespace: str, dimensions: Mapping[str, str],
                 properties: Mapping[str, Any]) -> None:
        """``dimensions`` (service, environment) go on every line as dimensions,
        ``properties`` (version) as plain members."""
        self.namespace = namespace
        self.dimensions = dict(dimensions)
        self.properties = dict(properties)

    def send(self, batch: Batch) -> None:
        """Write the batch's lines (from the pusher's thread)."""
        stream = sys.stdout
        for document in render(batch, self.namespace, self.dimensions, self.properties):
            # One write per line: the logs plugin writes to the same stream from its thread.
            stream.write(json.dumps(document, separators=(",", ":")) + "\n")
        stream.flush()

    def close(self) -> None:
        """Nothing to release: the stream is the process's."""
