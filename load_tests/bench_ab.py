"""Two sidecars, A and B, loaded at the same moments on one core: how much more CPU per
request A uses than B, as the median of paired per-round ratios with its 95% interval.

The instrument ``bench_plugin_cost.py`` uses for its wall-clock figure, for any two builds or
configurations: a change's effect measured against the code before it, or one part of a
plugin's cost measured against the chain without it. Both sidecars run the deployment
operators run (PostgreSQL, Redis, JSON access lines into a file) against one mock upstream;
every round starts both anew, warms them up, and loads both at once with one wrk each.

    # a build in another worktree (B) against this checkout (A), same chain
    .venv/bin/python load_tests/bench_ab.py --b-tree ../before
    # the default chain against the chain without logs and metrics
    .venv/bin/python load_tests/bench_ab.py --b-chain default-logs,metrics
    # one setting changed
    .venv/bin/python load_tests/bench_ab.py --a-env SIDECAR_ACCESS_LOG=false

With 16 to 30 rounds the interval is about one percent wide on each side: smaller effects
need more rounds, and one run that shows an effect near that size should be repeated before
it is believed. Needs wrk, PostgreSQL and Redis, as ``bench_plugin_cost.py`` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.bench_plugin_cost import (
    chains,
    deployment_env,
    drive,
    median_interval,
)
from load_tests.harness import (
    REPO,
    Target,
    bench_caller_key,
    cli,
    mock_upstream,
    scratch_database,
    services_pinned,
    sidecar,
    split_cpus,
    workload_body,
    workload_names,
)
from proxy.settings import DEFAULT_CHAIN


def chain_of(spec: str) -> list[str]:
    """``default``, ``default-NAME[,NAME]`` (the default chain without those) or an explicit
    comma-separated chain."""
    if spec == "default":
        return list(DEFAULT_CHAIN)
    if spec.startswith("default-"):
        return chains(spec.removeprefix("default-").split(","), "default")["without"]
    return [name for name in spec.split(",") if name]


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
    args = parser.parse_args()
    body = workload_body(args.workload)
    sides = {
        "A": (args.a_tree.resolve(), chain_of(args.a_chain), env_of(args.a_env)),
        "B": (args.b_tree.resolve(), chain_of(args.b_chain), env_of(args.b_env)),
    }
    side_cpus, load_cpus = split_cpus()
    ratios: list[float] = []
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    with scratch_database() as db_env, tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, \
            services_pinned(load_cpus), mock_upstream(cpus=load_cpus) as mock:
        common = deployment_env(db_env, mock.url)
        cli(common, "migrate")
        caller_key = bench_caller_key(common)
        for round_ in range(args.rounds):
            with ExitStack() as stack:
                # Alternate which one starts and is loaded first, so that neither always
                # has that place.
                order = ["A", "B"] if round_ % 2 == 0 else ["B", "A"]
                targets: dict[str, Target] = {}
                for name in order:
                    tree, chain, extra = sides[name]
                    env = {**common, "SIDECAR_PLUGINS": ",".join(chain),
                           "SIDECAR_LOG_FILE": str(Path(tmp) / f"access-{name}.log"), **extra}
                    targets[name] = stack.enter_context(
                        sidecar(mock.url, env, cpus=side_cpus, tree=tree))
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
    print(f"A uses {statistics.median(ratios) - 1:+.2%} CPU per request against B "
          f"(95% interval {low - 1:+.2%} to {high - 1:+.2%}; {args.rounds} rounds, standard "
          f"deviation of the ratios {statistics.stdev(ratios):.3f}); medians: "
          f"A {statistics.median(cpu['A']):.0f} us, B {statistics.median(cpu['B']):.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
