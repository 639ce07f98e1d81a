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
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.harness import (
    MOCK_KEY,
    PYTHON,
    REPO,
    LoadResult,
    minimal_proxy,
    mock_upstream,
    sidecar,
    stream_ttfb_ms,
    wrk,
)

RESULTS = Path(__file__).resolve().parent / "results"


def issue_key(env: dict[str, str]) -> str:
    """Create a sidecar key with the auth plugin's CLI (when auth is in the chain)."""
    full = dict(os.environ) | env
    out = subprocess.run(
        [PYTHON, "-m", "proxy.cli", "keys", "create", "--owner", "bench", "--role", "user"],
        env=full, capture_output=True, text=True, check=True, cwd=REPO).stdout
    return out.strip().splitlines()[-1]


def main() -> int:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--chain", default="default",
                        help="SIDECAR_PLUGINS for the sidecar ('default' = configured default)")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        upstream = stack.enter_context(mock_upstream())
        floor = stack.enter_context(minimal_proxy(upstream))
        data_dir = tempfile.mkdtemp(prefix="bench-core-")
        env = {"SIDECAR_DATA_DIR": data_dir, "SIDECAR_MIGRATE_ON_START": "true",
               "RATE_LIMIT_REQUESTS": "1000000", "MISTRAL_BASE_URL": upstream,
               "MISTRAL_API_KEY": MOCK_KEY}
        if args.chain != "default":
            env["SIDECAR_PLUGINS"] = args.chain
        chain = env.get("SIDECAR_PLUGINS", "default")
        if args.chain == "default" or "auth" in args.chain.split(","):
            subprocess.run([PYTHON, "-m", "proxy.cli", "migrate"], env=dict(os.environ) | env,
                           check=True, capture_output=True, cwd=REPO)
            caller_key = issue_key(env)
        else:
            caller_key = "any-caller-key"
        side = stack.enter_context(sidecar(upstream, env))
        targets = {"direct": (upstream, MOCK_KEY), "minimal-proxy": (floor, MOCK_KEY),
                   "sidecar": (side, caller_key)}
        for name, (url, key) in targets.items():
            wrk(url, args.connections, 2, api_key=key)  # warm-up
            many: LoadResult = wrk(url, args.connections, args.seconds, api_key=key)
            one: LoadResult = wrk(url, 1, max(3, args.seconds // 2), api_key=key)
            ttfb = stream_ttfb_ms(url, key)
            results[name] = {"rps_32": many.requests_per_s, "p50_32": many.p50_ms,
                             "p99_32": many.p99_ms, "errors_32": many.errors,
                             "p50_1": one.p50_ms, "ttfb_stream": ttfb}
            print(many.row(f"{name} @{args.connections}"), flush=True)
            print(f"{'':<22} p50 @1 {one.p50_ms:.3f} ms, stream TTFB {ttfb:.2f} ms", flush=True)

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
             f"Chain: `{chain}`; {args.connections} connections, {args.seconds} s per run; "
             f"wrk on the same {os.cpu_count()}-core machine as the mock and the proxies.", "",
             "| target | req/s @32 | p50 @32 ms | p99 @32 ms | p50 @1 ms | stream TTFB ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['rps_32']:.0f} | {r['p50_32']:.2f} | {r['p99_32']:.2f} | "
                     f"{r['p50_1']:.3f} | {r['ttfb_stream']:.2f} |")
    lines += ["", "| measure | value | target | met |", "| --- | ---: | ---: | :---: |"]
    for label, value, target, ok in verdicts:
        lines.append(f"| {label} | {value} | {target} | {'yes' if ok else 'no'} |")
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "core.md").write_text(report)
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
