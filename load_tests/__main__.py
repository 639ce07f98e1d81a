"""The sidecar against a minimal aiohttp pass-through and direct access to the upstream, in
one run: throughput, latency, CPU per request and memory, with the verdicts against the
targets (load_tests/README.md explains them).

Run from the repository root:

    .venv/bin/python -m load_tests [--seconds 10] [--rounds 5] [--connections 32]
        [--workload minimal|chat-typical] [--embedded] [--chain default]

By default the sidecar runs the whole default chain on PostgreSQL (a database created for the
run, dropped afterwards) and Redis (a fresh key prefix), with JSON access lines at INFO into a
file. Needs wrk (``apt-get install wrk``), and PostgreSQL and Redis unless ``--embedded``
(TEST_PG_HOST/PORT/USER, default 127.0.0.1:5432 as postgres; TEST_REDIS_HOST/PORT, default
127.0.0.1:6379). The report goes to standard output and to ``load_tests/results/latest.md``
and ``latest.json``, replacing the previous ones.

Exit status: 0 when every target is met, 1 when one is missed, 3 when requests failed (the
figures then say nothing).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from load_tests import report
from load_tests.compare import Contender, Load, measure
from load_tests.deployment import chain_of, deployment
from load_tests.harness import (
    MOCK_KEY,
    Target,
    minimal_proxy,
    mock_upstream,
    services_pinned,
    sidecar,
    split_cpus,
    workload_body,
    workload_names,
)

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m load_tests", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10,
                        help="length of each measured run at full load (default 10)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds, each loading every target once in shuffled order; "
                        "figures are their medians (default 5)")
    parser.add_argument("--connections", type=int, default=32,
                        help="concurrent connections at full load (default 32)")
    parser.add_argument("--workload", choices=workload_names(), default="minimal",
                        help="the chat request sent: minimal (one short message, the least "
                        "work per request, so the sidecar's largest share) or one of "
                        "load_tests/workloads (chat-typical: a 2 KB support conversation)")
    parser.add_argument("--embedded", action="store_true",
                        help="SQLite and in-process limits instead of PostgreSQL and Redis")
    parser.add_argument("--chain", default="default",
                        help="the sidecar's plugins: default, default-NAME[,NAME] (the default "
                        "chain without those) or an explicit comma-separated chain")
    parser.add_argument("--no-pin", action="store_true",
                        help="let every process float over all CPUs instead of giving the "
                        "proxy under test a CPU of its own")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help="directory for latest.md and latest.json "
                        "(default load_tests/results)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.connections < 1:
        parser.error("--seconds, --rounds and --connections must be positive")
    return args


def run(args: argparse.Namespace, command: str) -> tuple[dict[str, Any], str, bool]:
    """Start everything, measure, stop everything; the result (``command`` is the command
    line it records), its Markdown report, and whether every target was met without a failed
    request."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    body = workload_body(args.workload)
    chain = chain_of(args.chain)
    # The proxy under test (pass-through or sidecar) on a CPU of its own, everything else
    # (wrk, the mock, PostgreSQL, Redis) on the others: its throughput is then what one core
    # does, as in production where the upstream and the databases run elsewhere.
    proxy_cpus, other_cpus = (None, None) if args.no_pin else split_cpus()
    placement = (f"pass-through and sidecar pinned to CPU {proxy_cpus}, everything else to "
                 f"CPU {other_cpus}" if proxy_cpus else "no CPU pinning")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        if not args.embedded:
            stack.enter_context(services_pinned(other_cpus))
        upstream = stack.enter_context(mock_upstream(cpus=other_cpus)).url
        deployed = stack.enter_context(deployment(upstream, chain, args.embedded, workdir))
        floor = stack.enter_context(minimal_proxy(upstream, cpus=proxy_cpus))
        side = stack.enter_context(sidecar(upstream, deployed.env, cpus=proxy_cpus))
        contenders = {report.DIRECT: Contender(Target(upstream, 0), MOCK_KEY, own_process=False),
                      report.PASS_THROUGH: Contender(floor, MOCK_KEY),
                      report.SIDECAR: Contender(side, deployed.caller_key)}
        figures = measure(contenders, Load(args.connections, args.seconds, args.rounds, body,
                                           cpus=other_cpus))
    checks = report.verdicts(figures)
    notes = report.side_notes(figures)
    setup = {"deployment": deployed.kind, "chain": chain, "workload": args.workload,
             "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
             "placement": placement}
    result = report.result_data(setup, command, figures, checks, notes)
    errors = sum(fig.errors for fig in figures.values())
    return result, report.document(result, figures, checks, notes), \
        not errors and all(v.met for v in checks)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the report and write it; the exit status (see above)."""
    args = parse(argv)
    # Stopped with SIGTERM, still stop the processes started, drop the database and give
    # PostgreSQL and Redis their CPUs back: exiting runs the cleanups, dying does not.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    given = sys.argv[1:] if argv is None else argv
    result, markdown, met = run(args, shlex.join(["python", "-m", "load_tests", *given]))
    print(markdown, end="")
    for path in report.write(args.output, result, markdown):
        print(f"written: {path}")
    if any(target["errors"] for target in result["targets"].values()):
        print("some requests failed: the figures are not a measurement of the proxies",
              file=sys.stderr)
        return 3
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
