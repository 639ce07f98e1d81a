"""What the logs and metrics plugins cost: sidecar throughput with and without them.

Standalone: starts the mock upstream and two sidecars as processes on 127.0.0.1, drives each
with 32 concurrent connections of non-streamed chat completions, alternating configurations
over several rounds, and prints requests/s, latencies, the sidecar's CPU time per request and
the throughput ratio. Access lines go to a log file in a temporary directory (never the
terminal), one per request, as in production.

``--chain minimal`` (default) compares plugins ``via`` with ``logs,metrics,via``: the
strictest view, where logs and metrics also pay for parsing each response's JSON (token
usage). ``--chain default`` compares the default chain without and with ``logs,metrics``
(auth in passthrough mode, SQLite store, in-process rate limiter with a limit never reached):
there the persistence plugin parses responses anyway. ``--tracing`` adds a configuration
with the tracing plugin too.

    .venv/bin/python load_tests/bench_observability.py [--seconds 10] [--rounds 3]
        [--chain minimal|default] [--tracing]

Uses wrk when installed (apt-get install wrk), else a built-in aiohttp load generator.
The target is a ratio of at least 0.95 (the two plugins cost at most 5% of throughput).

The project's verdict on this target comes from ``load_tests/bench_plugin_cost.py`` (the
default chain on PostgreSQL and Redis, exact instruction counts plus measured system time);
this script gives the wall-clock view; by default against the bare forwarder, the plugin's
worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.harness import PYTHON, REPO, cpu_seconds, free_port, wait_ready, wrk

UPSTREAM_KEY = "bench-upstream-key"
PATH = "/v1/chat/completions"
BODY = json.dumps({"model": "mistral-small-latest",
                   "messages": [{"role": "user", "content": "How fast is this sidecar?"}]})
TARGET_RATIO = 0.95


@contextlib.contextmanager
def _process(args: list[str], ready_url: str, env: Mapping[str, str], log: Path
             ) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "OTEL_"))}
    full_env.update(env)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO)
    try:
        wait_ready(ready_url, proc)
        yield proc
    except RuntimeError:
        sys.stderr.write(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Result:
    """One measurement; ``cpu_us`` is the sidecar's CPU time per request (user + system)."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float = float("nan")


def run_wrk(url: str, connections: int, seconds: float, work: Path) -> Result:
    """Drive ``url`` with wrk (one thread: the machine's cores belong to the servers)."""
    load = wrk(url, connections, seconds, api_key=UPSTREAM_KEY, path=PATH, body=BODY)
    return Result(load.requests_per_s, load.p50_ms, load.p99_ms, load.errors, load.requests)


async def _drive(url: str, connections: int, seconds: float) -> Result:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}
    body = BODY.encode()
    stop = time.perf_counter() + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            async with http.post(url + PATH, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        began = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return Result(len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
                  latencies[int(len(latencies) * 0.99)] * 1000, errors, len(latencies))


def measure(url: str, pid: int, connections: int, seconds: float, work: Path) -> Result:
    """One run of load against ``url``, served by process ``pid``."""
    before = cpu_seconds(pid)
    if shutil.which("wrk"):
        result = run_wrk(url, connections, seconds, work)
    else:
        result = asyncio.run(_drive(url, connections, seconds))
    if result.requests:
        result.cpu_us = (cpu_seconds(pid) - before) / result.requests * 1e6
    return result


#: For the default chain: callers present the upstream key (no key store to fill), the
#: SQLite store migrates itself, and the rate limiter works without ever refusing.
DEFAULT_CHAIN_ENV = {
    "SIDECAR_AUTH_MODE": "passthrough",
    "SIDECAR_MIGRATE_ON_START": "true",
    "RATE_LIMIT_REQUESTS": "50000000",
}


def chains(kind: str, tracing: bool) -> dict[str, str]:
    """Configuration name -> plugin chain for ``--chain``."""
    if kind == "minimal":
        configs = {"baseline": "via", "logs+metrics": "logs,metrics,via"}
        if tracing:
            configs["logs+metrics+tracing"] = "logs,metrics,tracing,via"
        return configs
    from proxy.settings import DEFAULT_CHAIN

    without = [p for p in DEFAULT_CHAIN if p not in ("logs", "metrics", "tracing")]
    configs = {"baseline": ",".join(without),
               "logs+metrics": ",".join(p for p in DEFAULT_CHAIN if p != "tracing")}
    if tracing:
        configs["logs+metrics+tracing"] = ",".join(DEFAULT_CHAIN)
    return configs


@contextlib.contextmanager
def sidecar(name: str, plugins: str, upstream: str, work: Path,
            extra: Mapping[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """A sidecar process with ``plugins``; yields its URL and process id."""
    port = free_port()
    env = {**(extra or {}),
        "MISTRAL_BASE_URL": upstream, "MISTRAL_API_KEY": UPSTREAM_KEY,
        "SIDECAR_PORT": str(port), "SIDECAR_PLUGINS": plugins,
        "SIDECAR_DATA_DIR": str(work / f"data-{name}"),
        "LOG_LEVEL": "INFO",
        "SIDECAR_LOG_STDOUT": "false",
        "SIDECAR_LOG_FILE": str(work / f"access-{name}.log"),
    }
    url = f"http://127.0.0.1:{port}"
    with _process([PYTHON, "-m", "proxy.cli", "serve"], url + "/healthz", env,
                  work / f"sidecar-{name}.out") as proc:
        yield url, proc.pid


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when the ratio misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tracing", action="store_true",
                        help="also measure with the tracing plugin")
    parser.add_argument("--chain", choices=("minimal", "default"), default="minimal",
                        help="what logs and metrics are added to (see above)")
    args = parser.parse_args(argv)

    configs = chains(args.chain, args.tracing)
    extra = DEFAULT_CHAIN_ENV if args.chain == "default" else {}
    for name, plugins in configs.items():
        print(f"{name:<22} SIDECAR_PLUGINS={plugins}")
    results: dict[str, list[Result]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        work = Path(tmp)
        mock_port = free_port()
        upstream = f"http://127.0.0.1:{mock_port}"
        with contextlib.ExitStack() as stack:
            stack.enter_context(_process(
                [PYTHON, "-m", "proxy.cli", "mock-upstream", "--port", str(mock_port),
                 "--api-key", UPSTREAM_KEY], upstream + "/__mock__/settings", {},
                work / "mock.out"))
            urls = {name: stack.enter_context(sidecar(str(i), plugins, upstream, work, extra))
                    for i, (name, plugins) in enumerate(configs.items())}
            for url, pid in urls.values():  # warm up connections and caches
                measure(url, pid, args.connections, 2, work)
            for round_number in range(1, args.rounds + 1):
                for name, (url, pid) in urls.items():
                    result = measure(url, pid, args.connections, args.seconds, work)
                    results[name].append(result)
                    print(f"round {round_number}  {name:<22} {result.rps:7.0f} req/s   "
                          f"p50 {result.p50_ms:6.2f} ms   p99 {result.p99_ms:6.2f} ms   "
                          f"sidecar CPU {result.cpu_us:6.1f} us/request   "
                          f"errors {result.errors}", flush=True)
        lines = sum(1 for _ in (work / "access-1.log").open())

    def median_rps(name: str) -> float:
        return statistics.median(r.rps for r in results[name])

    def median_cpu(name: str) -> float:
        return statistics.median(r.cpu_us for r in results[name])

    base, base_cpu = median_rps("baseline"), median_cpu("baseline")
    print(f"\n{args.chain} chain, {args.connections} connections, {args.rounds} x "
          f"{args.seconds:g} s per configuration "
          f"({'wrk' if shutil.which('wrk') else 'aiohttp'} load generator); "
          f"{lines} access lines written by logs+metrics")
    for name in configs:
        rps, cpu = median_rps(name), median_cpu(name)
        p50 = statistics.median(r.p50_ms for r in results[name])
        print(f"  {name:<22} median {rps:7.0f} req/s (ratio {rps / base:.3f})   "
              f"p50 {p50:6.2f} ms   CPU {cpu:6.1f} us/request (+{cpu - base_cpu:5.1f} us, "
              f"throughput bound {base_cpu / cpu:.3f})")
    ratio = median_rps("logs+metrics") / base
    bound = base_cpu / median_cpu("logs+metrics")
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"logs+metrics: throughput ratio {ratio:.3f} ({verdict} the target of "
          f">= {TARGET_RATIO}); CPU-time ratio {bound:.3f} (the throughput ratio a sidecar "
          f"bound by its own CPU would see, insensitive to other load on the machine)")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
