"""Core benchmark: direct upstream vs a minimal aiohttp pass-through vs the sidecar.

Measures, in one run: requests/s and p50/p99 at 32 connections, p50 at 1 connection, and the
median time to first byte of a streamed answer, for each of the three. Prints the ratios
against the issue's targets and writes them to load_tests/results/core.md.

    .venv/bin/python load_tests/bench_core.py [--seconds 10] [--chain default|via|...]

Needs wrk (apt-get install wrk). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.harness import (
    MOCK_KEY,
    LoadResult,
    Target,
    bench_caller_key,
    cli,
    minimal_proxy,
    mock_upstream,
    sidecar,
    stream_ttfb_ms,
    wrk,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain", default="default",
                        help="SIDECAR_PLUGINS for the sidecar ('default' = configured default)")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        upstream = stack.enter_context(mock_upstream()).url
        floor = stack.enter_context(minimal_proxy(upstream))
        data_dir = tempfile.mkdtemp(prefix="bench-core-")
        env = {"SIDECAR_DATA_DIR": data_dir, "SIDECAR_MIGRATE_ON_START": "true",
               "RATE_LIMIT_REQUESTS": "1000000", "MISTRAL_BASE_URL": upstream,
               "MISTRAL_API_KEY": MOCK_KEY}
        if args.chain != "default":
            env["SIDECAR_PLUGINS"] = args.chain
        chain = env.get("SIDECAR_PLUGINS", "default")
        if args.chain == "default" or "auth" in args.chain.split(","):
            cli(env, "migrate")
            caller_key = bench_caller_key(env)
        else:
            caller_key = "any-caller-key"
        side = stack.enter_context(sidecar(upstream, env))
        targets = {"direct": (Target(upstream, 0), MOCK_KEY),
                   "minimal-proxy": (floor, MOCK_KEY), "sidecar": (side, caller_key)}
        loads: dict[str, list[LoadResult]] = {name: [] for name in targets}
        for target, key in targets.values():
            wrk(target.url, args.connections, 2, api_key=key)  # warm-up
        # Rounds in shuffled order: on a shared machine a single run of each says more
        # about the neighbours than about the proxy.
        shuffle = random.Random(11)
        for _ in range(args.rounds):
            for name in shuffle.sample(list(targets), len(targets)):
                target, key = targets[name]
                loads[name].append(wrk(target.url, args.connections, args.seconds,
                                       api_key=key, pid=target.pid or None))
        for name, (target, key) in targets.items():
            one: LoadResult = wrk(target.url, 1, max(3, args.seconds // 2), api_key=key)
            ttfb = stream_ttfb_ms(target.url, key)
            many = loads[name]
            results[name] = {
                "rps_32": statistics.median(r.requests_per_s for r in many),
                "p50_32": statistics.median(r.p50_ms for r in many),
                "p99_32": statistics.median(r.p99_ms for r in many),
                "errors_32": sum(r.errors for r in many),
                "cpu_us": statistics.median(r.cpu_us_per_request for r in many),
                "p50_1": one.p50_ms, "ttfb_stream": ttfb}
            print(f"{name:<14} {results[name]['rps_32']:8.0f} req/s @{args.connections}, "
                  f"CPU {results[name]['cpu_us']:6.0f} us/req, p50 @1 {one.p50_ms:.3f} ms, "
                  f"stream TTFB {ttfb:.2f} ms", flush=True)

    floor_r, side_r = results["minimal-proxy"], results["sidecar"]
    throughput_ratio = side_r["rps_32"] / floor_r["rps_32"]
    added_p50 = side_r["p50_1"] - floor_r["p50_1"]
    added_ttfb = side_r["ttfb_stream"] - floor_r["ttfb_stream"]
    verdicts = [
        ("throughput vs minimal pass-through @32", f"{throughput_ratio:.1%}", ">= 85%",
         throughput_ratio >= 0.85),
        ("added p50 latency @1", f"{added_p50:+.3f} ms", "<= 0.5 ms", added_p50 <= 0.5),
        ("added stream time to first byte", f"{added_ttfb:+.3f} ms", "<= 2 ms",
         added_ttfb <= 2.0),
    ]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Core benchmark ({stamp})", "",
             f"Chain: `{chain}`; {args.connections} connections, median of {args.rounds} "
             f"shuffled rounds of {args.seconds} s; wrk on the same {os.cpu_count()}-core "
             "machine as the mock and the proxies. CPU is the proxy process's own time per "
             "request.", "",
             "| target | req/s @32 | p50 @32 ms | p99 @32 ms | CPU us/req | p50 @1 ms | "
             "stream TTFB ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        cpu = "" if r["cpu_us"] != r["cpu_us"] else f"{r['cpu_us']:.0f}"
        lines.append(f"| {name} | {r['rps_32']:.0f} | {r['p50_32']:.2f} | {r['p99_32']:.2f} | "
                     f"{cpu} | {r['p50_1']:.3f} | {r['ttfb_stream']:.2f} |")
    lines += ["", "| measure | value | target | met |", "| --- | ---: | ---: | :---: |"]
    for label, value, goal, ok in verdicts:
        lines.append(f"| {label} | {value} | {goal} | {'yes' if ok else 'no'} |")
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.chain == "default" else "-" + args.chain.replace(",", "-")
    (RESULTS / f"core{suffix}.md").write_text(report)
    (RESULTS / f"core{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
