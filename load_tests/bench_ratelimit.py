"""Rate-limit benchmark: what the limiter costs in throughput at 32 connections.

Starts the mock upstream and sidecars with the chain ``via`` (no limiter), ``ratelimit,via``
with the shared Redis limiter and ``ratelimit,via`` with the in-process limiter, each with a
limit generous enough that nothing is refused. Drives each with 32 concurrent connections
(aiohttp by default, or wrk), in alternating rounds, and prints the median requests/s and its
ratio against the sidecar without a limiter (target: the Redis limiter costs at most 10%).

On a small machine shared with other work, throughput swings from run to run; the sidecar's
own CPU time per request (from /proc) is the steadier measure of what the limiter adds, so it
is reported too, with Redis's CPU per request beside it.

    .venv/bin/python load_tests/bench_ratelimit.py [--seconds 2] [--rounds 12] [--driver wrk]
        [--chain metrics,validate,retry,breaker,keypool,via]

Needs a Redis on 127.0.0.1:6379 (``--redis-host``/``--redis-port``); keys go under a fresh
prefix and are deleted afterwards. Everything runs on 127.0.0.1.

The project's verdict on this target comes from ``load_tests/bench_plugin_cost.py`` (the
default chain on PostgreSQL and Redis, exact instruction counts plus measured system time);
this script gives the wall-clock view; by default against the bare forwarder, the plugin's
worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.harness import (
    CHAT_BODY,
    cpu_seconds,
    mock_upstream,
    sidecar,
    wrk,
)

RESULTS = Path(__file__).resolve().parent / "results"
CALLER = "bench-caller-key"


async def _drive(url: str, connections: int, seconds: float) -> tuple[float, float, float, int]:
    """``connections`` workers posting chat completions for ``seconds``: req/s, p50, p99 (ms),
    and the number of non-200 answers."""
    body = CHAT_BODY.encode()
    headers = {"Authorization": f"Bearer {CALLER}", "Content-Type": "application/json"}
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.post(url + "/v1/chat/completions", data=body,
                                     headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return len(latencies) / elapsed, p50, p99, failures


def redis_cpu_seconds(host: str, port: int) -> float:
    """User + system CPU time of the Redis server so far."""
    import redis

    client = redis.Redis(host=host, port=port)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass
class Run:
    """One measured run against one sidecar."""

    rps: float
    p99_ms: float
    errors: int
    cpu_us: float
    redis_cpu_us: float


def measure(url: str, pid: int, driver: str, connections: int, seconds: int,
            redis_at: tuple[str, int]) -> Run:
    """One run: requests/s, p99, errors, and CPU microseconds per request."""
    cpu0, redis0 = cpu_seconds(pid), redis_cpu_seconds(*redis_at)
    if driver == "wrk":
        result = wrk(url, connections, seconds, api_key=CALLER)
        rps, p99, errors = result.requests_per_s, result.p99_ms, result.errors
        count = rps * seconds
    else:
        rps, _p50, p99, errors = asyncio.run(_drive(url, connections, seconds))
        count = rps * seconds
    cpu = cpu_seconds(pid) - cpu0
    redis_cpu = redis_cpu_seconds(*redis_at) - redis0
    return Run(rps, p99, errors, cpu / count * 1e6, redis_cpu / count * 1e6)


def _clear_prefix(host: str, port: int, prefix: str) -> None:
    import redis

    client = redis.Redis(host=host, port=port)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


def main() -> int:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--chain", default="via",
                        help="plugins of the sidecar without a limiter; the others add "
                        "ratelimit in front (plugins that need no database or keys)")
    parser.add_argument("--processes", type=int, default=2,
                        help="sidecar processes per configuration, measured in turn")
    parser.add_argument("--driver", choices=("aiohttp", "wrk"), default="aiohttp")
    parser.add_argument("--redis-host", default=os.environ.get("TEST_REDIS_HOST", "127.0.0.1"))
    parser.add_argument("--redis-port", type=int,
                        default=int(os.environ.get("TEST_REDIS_PORT", "6379")))
    args = parser.parse_args()

    prefix = f"bench-ratelimit:{uuid.uuid4().hex[:8]}:"
    generous = {"RATE_LIMIT_REQUESTS": "60000000", "RATE_LIMIT_WINDOW": "60"}
    limited = f"ratelimit,{args.chain}"
    configs = {
        "no limiter": {"SIDECAR_PLUGINS": args.chain},
        "redis limiter": {"SIDECAR_PLUGINS": limited, **generous,
                          "REDIS_HOST": args.redis_host, "REDIS_PORT": str(args.redis_port),
                          "SIDECAR_REDIS_PREFIX": prefix},
        "in-process limiter": {"SIDECAR_PLUGINS": limited, **generous},
    }
    redis_at = (args.redis_host, args.redis_port)
    runs: dict[str, list[Run]] = {name: [] for name in configs}
    order = random.Random(7)
    try:
        with ExitStack() as stack:
            upstream = stack.enter_context(mock_upstream()).url
            # Several processes per configuration, taken in turn: one process can be a few
            # percent faster than an identical one (memory layout, hash seeds), which would
            # otherwise show up as a difference between configurations.
            targets = {name: [stack.enter_context(sidecar(upstream, env))
                              for _ in range(args.processes)]
                       for name, env in configs.items()}
            for instances in targets.values():
                for target in instances:
                    measure(target.url, target.pid, args.driver, args.connections, 1,
                            redis_at)  # warm-up
            for round_no in range(args.rounds):
                names = list(configs)
                order.shuffle(names)
                for name in names:
                    target = targets[name][round_no % args.processes]
                    run = measure(target.url, target.pid, args.driver, args.connections,
                                  args.seconds, redis_at)
                    runs[name].append(run)
                    print(f"round {round_no + 1} {name:<20} {run.rps:>8.0f} req/s "
                          f"p99 {run.p99_ms:6.2f} ms  sidecar CPU {run.cpu_us:6.1f} us/req  "
                          f"Redis CPU {run.redis_cpu_us:5.1f} us/req  errors {run.errors}",
                          flush=True)
    finally:
        _clear_prefix(args.redis_host, args.redis_port, prefix)

    # Each round measures every configuration back to back (in shuffled order), so ratios
    # are taken per round (paired) and then their median: load from elsewhere on the machine
    # drifts more slowly than a round lasts.
    base = runs["no limiter"]
    lines = [f"Rate-limit benchmark, chain `{args.chain}` with and without `ratelimit` in "
             f"front: {args.connections} connections ({args.driver}), "
             f"{args.rounds} rounds of {args.seconds} s, {os.cpu_count()} cores shared by "
             "client, mock, sidecar and Redis. Medians; ratios are medians of per-round "
             "ratios against the sidecar without a limiter.", "",
             "| sidecar | req/s | throughput vs no limiter | sidecar CPU us/req | "
             "CPU vs no limiter | Redis CPU us/req | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    summary: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        rps = statistics.median(r.rps for r in results)
        cpu = statistics.median(r.cpu_us for r in results)
        redis_cpu = statistics.median(r.redis_cpu_us for r in results)
        errors = sum(r.errors for r in results)
        rps_ratio = statistics.median(r.rps / b.rps for r, b in zip(results, base, strict=True))
        cpu_ratio = statistics.median(r.cpu_us / b.cpu_us
                                      for r, b in zip(results, base, strict=True))
        summary[name] = {"rps": rps, "throughput_ratio": rps_ratio, "cpu_us": cpu,
                         "cpu_ratio": cpu_ratio, "redis_cpu_us": redis_cpu, "errors": errors}
        lines.append(f"| {name} | {rps:.0f} | {rps_ratio:.1%} | {cpu:.1f} | "
                     f"{cpu_ratio - 1:+.1%} | {redis_cpu:.1f} | {errors} |")
    cost = 1 - summary["redis limiter"]["throughput_ratio"]
    cpu_cost = summary["redis limiter"]["cpu_ratio"] - 1
    lines += ["", f"Redis limiter: throughput cost {cost:.1%}, sidecar CPU per request "
              f"{cpu_cost:+.1%} (target <= 10%): "
              f"{'met' if max(cost, cpu_cost) <= 0.10 else 'NOT met'}."]
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    RESULTS.mkdir(exist_ok=True)
    tag = args.driver if args.chain == "via" else f"{args.driver}-chain"
    (RESULTS / f"ratelimit-{tag}.md").write_text(report)
    (RESULTS / f"ratelimit-{tag}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
