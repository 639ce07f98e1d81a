"""Sending batches to Datadog with its Python library (``datadog``, as the deployment guide
does): to a local Agent over DogStatsD, or straight to the HTTP API with an API key.

Both run in the pusher's thread, never on the event loop. Counts carry what the interval
summed, gauges its last value, and the latency its values as a distribution (percentiles are
computed by Datadog). The constant tags (``service``, ``env``, ``version``) are Datadog's
unified service tags.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import Any

from plugins.metrics_push.aggregate import Batch, Kind, Series

__all__ = ["DatadogApiSink", "DogStatsdSink", "SinkError"]

#: Series per HTTP request: keeps each payload well under the intake's size limit.
_SERIES_PER_REQUEST = 500
_DISTRIBUTIONS_PER_REQUEST = 100


class SinkError(Exception):
    """A batch (or part of it) could not be delivered."""


def _tags(constant: Sequence[str], series: Series) -> list[str]:
    return [*constant, *(f"{key}:{value}" for key, value in series.tags)]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class DatadogApiSink:
    """Submits batches to Datadog's HTTP API: counts and gauges to ``/api/v1/series``, the
    latency to ``/api/v1/distribution_points``; compressed, without retries (the next
    interval is the retry), with a timeout per request."""

    name = "datadog"

    def __init__(self, api_key: str, app_key: str, api_url: str, timeout: float,
                 constant_tags: Sequence[str]) -> None:
        """Configure the library's HTTP client for ``api_url`` (``https://api.<site>``);
        ``app_key`` may be empty (submitting metrics needs none)."""
        import datadog

        # datadogpy keeps its HTTP configuration per process (a process serves one sidecar
        # application). What it would otherwise look for in the Agent's configuration is
        # given here, and errors are raised to the pusher instead of logged.
        datadog.initialize(api_key=api_key, app_key=app_key or None, api_host=api_url,
                           host_name=socket.gethostname(), hostname_from_config=False,
                           mute=False, timeout=timeout, max_retries=0)
        self.constant_tags = list(constant_tags)

    def send(self, batch: Batch) -> None:
        """Submit the batch; raises on the first request that fails."""
        from datadog import api

        timestamp = int(batch.ended)
        interval = max(1, round(batch.ended - batch.started))
        series: list[dict[str, Any]] = []
        distributions: list[dict[str, Any]] = []
        for item in batch.series:
            kind = item.metric.kind
            entry: dict[str, Any] = {"metric": item.metric.name,
                                     "tags": _tags(self.constant_tags, item)}
            if kind is Kind.DISTRIBUTION:
                entry["points"] = [(timestamp, list(item.values))]
                distributions.append(entry)
                continue
            entry["points"] = [(timestamp, item.value)]
            entry["type"] = kind.value
            if kind is Kind.COUNT:
                entry["interval"] = interval
            series.append(entry)
        for chunk in _chunks(series, _SERIES_PER_REQUEST):
            api.Metric.send(metrics=chunk, compress_payload=True)
        for chunk in _chunks(distributions, _DISTRIBUTIONS_PER_REQUEST):
            api.Distribution.send(distributions=chunk, compress_payload=True)

    def close(self) -> None:
        """Nothing to release: the library keeps one HTTP session per process."""


class DogStatsdSink:
    """Sends batches to a Datadog Agent over DogStatsD (UDP), buffered into as few datagrams
    as fit; the Agent adds the host and submits."""

    name = "datadog"

    def __init__(self, host: str, port: int, constant_tags: Sequence[str]) -> None:
        """A client for the Agent at ``host:port``."""
        from datadog.dogstatsd import DogStatsd

        # Aggregation is ours (one point per series and interval); buffering packs them.
        self.client = DogStatsd(host=host, port=port, constant_tags=list(constant_tags),
                                disable_buffering=False, disable_aggregation=True,
                                disable_telemetry=True)

    def send(self, batch: Batch) -> None:
        """Send the batch; raises when a datagram could not be sent."""
        client = self.client
        for item in batch.series:
            tags = _tags((), item)
            name = item.metric.name
            kind = item.metric.kind
            if kind is Kind.COUNT:
                client.count(name, item.value, tags=tags)
            elif kind is Kind.GAUGE:
                client.gauge(name, item.value, tags=tags)
            else:
                for value in item.values:
                    client.distribution(name, value, tags=tags)
        if not client.flush():
            raise SinkError(f"DogStatsD datagrams to {client.host}:{client.port} were dropped")

    def close(self) -> None:
        """Send what is buffered and close the socket."""
        self.client.stop(timeout=1.0)
