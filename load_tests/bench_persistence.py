"""Persistence benchmark: what recording every request into PostgreSQL costs in throughput.

Starts the mock upstream and, one after the other, a sidecar without and with the persistence
plugin (chains ``store`` and ``store,persistence``, same PostgreSQL database), drives each with
32 concurrent keep-alive connections from aiohttp for N seconds, alternating the two over a few
rounds (ABBA order against drift), and prints requests/s, the ratio and whether every request
reached the database. Target: persistence costs <= 5 % of throughput.

Throughput on a shared 2-core machine is noisy, so it also prints the CPU time spent per
request by the sidecar process and by the PostgreSQL backends serving it (from /proc): the
cost of persistence in CPU, independent of what else runs on the machine.

    .venv/bin/python load_tests/bench_persistence.py [--seconds 10] [--rounds 2]
        [--workload chat|conversations] [--connections 32] [--chain store,...]

``--chain`` is the chain without persistence (default ``store``: the plugin against the bare
forwarder, its worst case); persistence goes in where the default chain has it.

PostgreSQL: TEST_PG_HOST / TEST_PG_PORT / TEST_PG_USER (default 127.0.0.1:5432, postgres),
admin database ``test``; a scratch database is created and dropped. Everything is on 127.0.0.1.

The project's verdict on this target comes from ``load_tests/bench_plugin_cost.py`` (the
default chain on PostgreSQL and Redis, exact instruction counts plus measured system time);
this script gives the wall-clock view; by default against the bare forwarder, the plugin's
worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from load_tests.harness import (  # noqa: E402
    Target,
    conninfo,
    cpu_seconds,
    mock_upstream,
    scratch_database,
    sidecar,
    usage_rows,
)

CHAT = {"model": "mistral-small-latest",
        "messages": [{"role": "user", "content": "benchmark me please"}]}


def backend_cpu(db_env: dict[str, str]) -> dict[int, float]:
    """CPU seconds of every PostgreSQL backend connected to the benchmark database."""
    with psycopg.connect(conninfo(db_env), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                            "pid <> pg_backend_pid()", (db_env["DB_NAME"],)).fetchall()
    found = {}
    for (pid,) in rows:
        with contextlib.suppress(OSError):  # a backend that has just ended
            found[int(pid)] = cpu_seconds(int(pid))
    return found


def persistence_sidecar(upstream: str, db_env: dict[str, str], plugins: str
                        ) -> contextlib.AbstractContextManager[Target]:
    """A sidecar process with ``plugins`` in front of ``upstream`` on the scratch database."""
    return sidecar(upstream, {"SIDECAR_PLUGINS": plugins, "SIDECAR_MIGRATE_ON_START": "true",
                              **db_env})


async def drive(url: str, connections: int, seconds: float, workload: str) -> tuple[int, int]:
    """``connections`` workers posting back to back for ``seconds``; (ok, errors)."""
    headers = {"Authorization": "Bearer bench-caller"}
    counts = {"ok": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            conversation: str | None = None
            while time.perf_counter() < stop_at:
                if workload == "chat":
                    path, body = "/v1/chat/completions", CHAT
                elif conversation is None:
                    path = "/v1/conversations"
                    body = {"model": CHAT["model"], "inputs": "benchmark me please"}
                else:
                    path, body = f"/v1/conversations/{conversation}", {"inputs": "once more"}
                try:
                    async with http.post(url + path, json=body, headers=headers) as resp:
                        payload: Any = await resp.json()
                        if resp.status == 200:
                            counts["ok"] += 1
                            if workload == "conversations" and conversation is None:
                                conversation = payload["conversation_id"]
                        else:
                            counts["errors"] += 1
                except aiohttp.ClientError:
                    counts["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return counts["ok"], counts["errors"]


def with_persistence(chain: str) -> str:
    """``chain`` with persistence where the default chain has it (after concurrency)."""
    names = [n for n in chain.split(",") if n]
    if "store" not in names:
        raise SystemExit("--chain must include store")
    before = ("store", "auth", "validate", "guard", "ratelimit", "concurrency")
    position = max(names.index(n) for n in before if n in names) + 1
    return ",".join([*names[:position], "persistence", *names[position:]])


def main() -> int:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workload", choices=("chat", "conversations"), default="chat")
    parser.add_argument("--chain", default="store",
                        help="plugins without persistence (must include store)")
    args = parser.parse_args()

    chains = {"without": args.chain, "with": with_persistence(args.chain)}
    rates: dict[str, list[float]] = {name: [] for name in chains}
    cpu_per_request: dict[str, list[float]] = {name: [] for name in chains}
    recorded_expected = recorded = 0
    with scratch_database() as db_env, mock_upstream() as mock:
        upstream = mock.url
        for round_ in range(args.rounds):
            order = list(chains) if round_ % 2 == 0 else list(reversed(chains))
            for name in order:
                with persistence_sidecar(upstream, db_env, chains[name]) as side:
                    url = side.url
                    asyncio.run(drive(url, args.connections, 1.0, args.workload))  # warm-up
                    before_rows = usage_rows(db_env) if name == "with" else 0
                    time.sleep(0.5)  # let the warm-up's records reach the database
                    cpu_before, pg_before = cpu_seconds(side.pid), backend_cpu(db_env)
                    ok, errors = asyncio.run(
                        drive(url, args.connections, args.seconds, args.workload))
                    line = ""
                    if name == "with":
                        drained_at = time.perf_counter()
                        target = recorded_expected = before_rows + ok
                        while usage_rows(db_env) < target and \
                                time.perf_counter() - drained_at < 60:
                            time.sleep(0.02)
                        line = (f"; all in the database "
                                f"{time.perf_counter() - drained_at:.2f} s after the load")
                    pg_after = backend_cpu(db_env)
                    pg_used = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
                    side_used = cpu_seconds(side.pid) - cpu_before
                    used = side_used + pg_used
                    rates[name].append(ok / args.seconds)
                    cpu_per_request[name].append(used / max(ok, 1) * 1e6)
                    print(f"round {round_ + 1} {name:>7} persistence: "
                          f"{ok / args.seconds:8.0f} req/s ({ok} ok, {errors} errors), "
                          f"CPU {used / max(ok, 1) * 1e6:4.0f} us/request (sidecar "
                          f"{side_used / max(ok, 1) * 1e6:.0f}, PostgreSQL "
                          f"{pg_used / max(ok, 1) * 1e6:.0f})"
                          f"{line}", flush=True)
        recorded = usage_rows(db_env)

    without, with_ = statistics.median(rates["without"]), statistics.median(rates["with"])
    cpu_without = statistics.median(cpu_per_request["without"])
    cpu_with = statistics.median(cpu_per_request["with"])
    cost = 1 - with_ / without
    print(f"\nworkload {args.workload}, {args.connections} connections, {args.seconds:g} s x "
          f"{args.rounds} rounds (medians); chain {chains['with']}")
    print(f"without persistence {without:8.0f} req/s   {cpu_without:6.0f} us CPU/request")
    print(f"with persistence    {with_:8.0f} req/s   {cpu_with:6.0f} us CPU/request")
    print(f"throughput ratio {with_ / without:.3f}: persistence costs {cost * 100:.1f} % "
          f"(target <= 5 %) -> {'OK' if cost <= 0.05 else 'OVER'}")
    print(f"CPU per request: +{(cpu_with / cpu_without - 1) * 100:.1f} % with persistence")
    print(f"usage_log rows: {recorded} (every request of the runs with persistence: "
          f"{'yes' if recorded >= recorded_expected else 'NO'})")
    return 0 if recorded >= recorded_expected else 1


if __name__ == "__main__":
    sys.exit(main())
