"""Two sidecars, A and B, loaded at the same moments on one core: how much more CPU per
request A uses than B, as the median of paired per-round ratios with its 95% interval.

For developers comparing two builds or configurations: a change's effect measured against the
code before it, or what a plugin costs measured against the chain without it. Both sidecars
run the deployment operators run (PostgreSQL, Redis, JSON access lines into a file) against
one mock upstream; every round starts both anew, warms them up, and loads both at once with
one wrk each. Loaded at once, whatever the machine does at that moment it does to both: taken
in turn, the paired ratios of two identical sidecars spread several times wider.

    # a build in another worktree (B) against this checkout (A), same chain
    .venv/bin/python load_tests/bench_ab.py --b-tree ../before
    # the default chain against the chain without logs and metrics
    .venv/bin/python load_tests/bench_ab.py --b-chain default-logs,metrics
    # one setting changed
    .venv/bin/python load_tests/bench_ab.py --a-env SIDECAR_LOG_ACCESS=false
    # and the user-space instructions per request of each, counted by callgrind
    .venv/bin/python load_tests/bench_ab.py --b-chain default-guard --instructions 1000

With 16 to 30 rounds the interval is about one percent wide on each side: smaller effects
need more rounds, and one run that shows an effect near that size should be repeated before
it is believed. ``--instructions N`` also counts, with valgrind's callgrind, the user-space
instructions each sidecar executes for N requests: exact to a fraction of a percent whatever
else the machine does, but blind to system calls and cache misses, so a second opinion beside
the CPU time, not a replacement. Needs wrk, PostgreSQL and Redis (TEST_PG_HOST/PORT/USER,
TEST_REDIS_HOST/PORT; default 127.0.0.1), and valgrind for ``--instructions``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.deployment import chain_of, delete_redis_keys, deployment_env
from load_tests.harness import (
    REPO,
    LoadResult,
    Target,
    bench_caller_key,
    cli,
    instructions_per_request,
    mock_upstream,
    scratch_database,
    services_pinned,
    sidecar,
    split_cpus,
    workload_body,
    workload_names,
    wrk,
)


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval around the median of ``values``: the order statistics
    between which the true median lies with probability ``level`` (binomial, the sign test's
    interval). Per-round ratios are independent samples when every round has fresh processes,
    whose offsets are the largest part of their spread."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 6:
        return ordered[0], ordered[-1]
    below = 0.0
    k = 0
    # Largest k with P(X < k) <= (1 - level) / 2 for X ~ Binomial(n, 1/2).
    while True:
        below += math.comb(n, k) / 2 ** n
        if below > (1 - level) / 2:
            break
        k += 1
    return ordered[k - 1], ordered[n - k]  # k >= 1 once n >= 6


def drive(targets: dict[str, Target], seconds: float, api_key: str, cpus: str | None,
          connections: int, measure: bool, body: str) -> dict[str, LoadResult]:
    """Load every target with chat requests (``body``) for ``seconds`` over ``connections``
    each, all at once (one wrk each); with ``measure``, each sidecar's CPU time per request
    too."""
    def load(name: str) -> LoadResult:
        target = targets[name]
        return wrk(target.url, connections, seconds, api_key=api_key, body=body,
                   pid=target.pid if measure else None, cpus=cpus)

    with ThreadPoolExecutor(len(targets)) as pool:
        return dict(zip(targets, pool.map(load, targets), strict=True))


def dilated_intervals(factor: float) -> dict[str, str]:
    """The time-based batch intervals (persistence and access-log flushes) stretched
    ``factor`` times: under callgrind the sidecar runs about that much slower, and so its
    batches hold as many requests as at full speed, which is what they cost per request in
    production.

    Each is set under its oldest variable name, which builds from before and after a
    renaming both read."""
    from plugins.logs import sidecar_settings as logs_settings
    from plugins.persistence.config import declared as persistence_settings

    wanted = {"persistence.flush_interval_seconds", "log.access_flush_seconds"}
    found = {}
    for setting in [*persistence_settings(), *logs_settings()]:
        names = [*getattr(setting, "deprecated_env", ()), setting.env]
        if setting.name in wanted and names[0]:
            found[names[0]] = f"{float(setting.default) * factor:g}"
    return found


def env_of(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a mapping."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"not KEY=VALUE: {pair!r}")
        found[key] = value
    return found


def main() -> int:
    """Run the rounds and print each ratio and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for side in ("a", "b"):
        parser.add_argument(f"--{side}-tree", type=Path, default=REPO,
                            help=f"checkout whose code sidecar {side.upper()} runs "
                            "(default: this one)")
        parser.add_argument(f"--{side}-chain", default="default",
                            help="default, default-NAME[,NAME] or an explicit chain")
        parser.add_argument(f"--{side}-env", action="append", default=[],
                            metavar="KEY=VALUE", help="extra setting (repeatable)")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workload", choices=workload_names(), default="minimal",
                        help="the chat request sent (load_tests/workloads); minimal: one short "
                        "message, the benchmarks' worst case")
    parser.add_argument("--instructions", type=int, default=0, metavar="N",
                        help="also count each sidecar's instructions over N requests under "
                        "callgrind (default 0: not counted)")
    parser.add_argument("--dilation", type=float, default=30,
                        help="how much slower a sidecar runs under callgrind; time-based batch "
                        "intervals are stretched as much while counting (default 30)")
    args = parser.parse_args()
    body = workload_body(args.workload)
    sides = {
        "A": (args.a_tree.resolve(), chain_of(args.a_chain), env_of(args.a_env)),
        "B": (args.b_tree.resolve(), chain_of(args.b_chain), env_of(args.b_env)),
    }
    side_cpus, load_cpus = split_cpus()
    ratios: list[float] = []
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    instructions: dict[str, float] = {}
    with scratch_database() as db_env, tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, \
            services_pinned(load_cpus), mock_upstream(cpus=load_cpus) as mock, \
            ExitStack() as cleanup:
        common = deployment_env(db_env, mock.url)
        cleanup.callback(delete_redis_keys, common["SIDECAR_REDIS_PREFIX"])
        cli(common, "migrate")
        caller_key = bench_caller_key(common)
        # SIDECAR_PLUGINS (deprecated): a --b-tree from before SIDECAR_PLUGINS_CHAIN reads it.
        envs = {name: {**common, "SIDECAR_PLUGINS": ",".join(chain),
                       "SIDECAR_LOG_FILE": str(Path(tmp) / f"access-{name}.log"), **extra}
                for name, (_tree, chain, extra) in sides.items()}
        if args.instructions:
            stretched = dilated_intervals(args.dilation)
            for name, (tree, _chain, _extra) in sides.items():
                instructions[name], rate = instructions_per_request(
                    mock.url, {**envs[name], **stretched}, caller_key, args.instructions,
                    args.connections, body, tree=tree)
                print(f"{name}: {instructions[name] / 1e3:8.0f} k instructions/request "
                      f"({rate:.0f} req/s under callgrind)", flush=True)
        for round_ in range(args.rounds):
            with ExitStack() as stack:
                # Alternate which one starts and is loaded first, so that neither always
                # has that place.
                order = ["A", "B"] if round_ % 2 == 0 else ["B", "A"]
                targets: dict[str, Target] = {}
                for name in order:
                    targets[name] = stack.enter_context(
                        sidecar(mock.url, envs[name], cpus=side_cpus, tree=sides[name][0]))
                drive(targets, args.warmup, caller_key, load_cpus, args.connections,
                      measure=False, body=body)
                results = {name: r.cpu_us_per_request for name, r in
                           drive(targets, args.seconds, caller_key, load_cpus,
                                 args.connections, measure=True, body=body).items()}
            for name, value in results.items():
                cpu[name].append(value)
            ratios.append(results["A"] / results["B"])
            print(f"round {round_ + 1:2d}: A {results['A']:5.0f} us, B {results['B']:5.0f} us "
                  f"CPU/request, A/B {ratios[-1]:.3f}", flush=True)
    low, high = median_interval(ratios)
    spread = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
    print(f"A uses {statistics.median(ratios) - 1:+.2%} CPU per request against B "
          f"(95% interval {low - 1:+.2%} to {high - 1:+.2%}; {args.rounds} rounds, standard "
          f"deviation of the ratios {spread:.3f}); medians: "
          f"A {statistics.median(cpu['A']):.0f} us, B {statistics.median(cpu['B']):.0f} us")
    if instructions:
        print(f"A executes {instructions['A'] / instructions['B'] - 1:+.2%} user-space "
              f"instructions per request against B ({args.instructions} requests each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
