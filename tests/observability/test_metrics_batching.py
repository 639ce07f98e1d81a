"""Batched histogram updates expose exactly what one observe() per value would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from plugins.metrics import observe_all

BUCKETS = (0.1, 0.5, 1.0, 5.0)
VALUES = [0.05, 0.1, 0.1000001, 0.5, 0.7, 1.0, 4.99, 5.0, 5.01, 120.0, 0.0, 0.3]


def _exposition(batched: bool) -> bytes:
    registry = CollectorRegistry()
    family = Histogram("latency_seconds", "test", ["op"], buckets=BUCKETS, registry=registry)
    child = family.labels("chat")
    if batched:
        observe_all(child, list(VALUES))
        observe_all(child, [2.0])
    else:
        for value in [*VALUES, 2.0]:
            child.observe(value)
    return b"\n".join(line for line in generate_latest(registry).splitlines()
                      if b"_created" not in line)


def test_batched_observations_match_one_by_one() -> None:
    assert _exposition(batched=True) == _exposition(batched=False)
    assert b'latency_seconds_bucket{le="0.1",op="chat"} 3.0' in _exposition(batched=True)
