"""Measure several servers side by side under the same load: rounds in shuffled order, then
one connection, streamed first bytes and resident memory after the load."""

from __future__ import annotations

import random
import statistics
import sys
from dataclasses import dataclass, field

from load_tests.harness import LoadResult, Target, rss_bytes, stream_ttfb_ms, wrk


@dataclass(frozen=True)
class Contender:
    """A server under test: where it listens, the key it is sent, and whether its own CPU
    time and memory are measured (not for the upstream itself: it serves the others too)."""

    target: Target
    api_key: str
    own_process: bool = True


@dataclass
class Figures:
    """What one contender measured; ``None`` where nothing was measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float | None
    p50_1_ms: float
    stream_ttfb_ms: float
    rss_mb: float | None
    rss_peak_mb: float | None
    #: Requests per second of every round, in round order (for paired ratios).
    rounds_per_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Load:
    """How the contenders are loaded."""

    connections: int
    seconds: float
    rounds: int
    body: str
    #: CPUs wrk runs on (``taskset`` list), or anywhere.
    cpus: str | None = None
    warmup_seconds: float = 2.0
    ttfb_samples: int = 200


def _megabytes(value: int) -> float:
    return value / 1e6


def measure(contenders: dict[str, Contender], load: Load, seed: int = 11
            ) -> dict[str, Figures]:
    """Load every contender in turn and return its figures.

    Each round loads every contender once, in an order shuffled per round: on a shared
    machine one run of each would say more about the neighbours than about the servers.
    Figures at ``load.connections`` are medians over the rounds.
    """
    def run(contender: Contender, connections: int, seconds: float, own: bool) -> LoadResult:
        target = contender.target
        return wrk(target.url, connections, seconds, api_key=contender.api_key,
                   body=load.body, pid=target.pid if own else None, cpus=load.cpus)

    for contender in contenders.values():
        run(contender, load.connections, min(load.warmup_seconds, load.seconds), own=False)
    many: dict[str, list[LoadResult]] = {name: [] for name in contenders}
    shuffle = random.Random(seed)
    for _ in range(load.rounds):
        for name in shuffle.sample(list(contenders), len(contenders)):
            contender = contenders[name]
            result = run(contender, load.connections, load.seconds, own=contender.own_process)
            many[name].append(result)
            print(f"round {len(many[name])}/{load.rounds} {name:<14} "
                  f"{result.requests_per_s:8.0f} req/s, errors {result.errors}",
                  file=sys.stderr, flush=True)
    figures = {}
    for name, contender in contenders.items():
        one = run(contender, 1, max(1.0, load.seconds / 2), own=False)
        ttfb = stream_ttfb_ms(contender.target.url, contender.api_key, load.ttfb_samples,
                              load.body)
        rss = rss_bytes(contender.target.pid) if contender.own_process else None
        results = many[name]
        figures[name] = Figures(
            requests_per_s=statistics.median(r.requests_per_s for r in results),
            p50_ms=statistics.median(r.p50_ms for r in results),
            p99_ms=statistics.median(r.p99_ms for r in results),
            errors=sum(r.errors for r in results) + one.errors,
            cpu_us_per_request=(statistics.median(r.cpu_us_per_request for r in results)
                                if contender.own_process else None),
            p50_1_ms=one.p50_ms, stream_ttfb_ms=ttfb,
            rss_mb=_megabytes(rss[0]) if rss else None,
            rss_peak_mb=_megabytes(rss[1]) if rss else None,
            rounds_per_s=[r.requests_per_s for r in results])
    return figures


def paired_ratio(figures: Figures, base: Figures) -> float:
    """Median over the rounds of ``figures``' throughput divided by ``base``'s in the same
    round: load from elsewhere drifts more slowly than a round lasts."""
    return statistics.median(a / b for a, b in
                             zip(figures.rounds_per_s, base.rounds_per_s, strict=True))
