"""What a plugin costs in the deployment operators run: the default chain on PostgreSQL and
Redis, with and without the plugin(s) under test.

Both sidecars run side by side against one mock upstream, with the full default chain (auth
with a real key, persistence into a scratch PostgreSQL database, the limiter on Redis, JSON
access lines at INFO into a file, metrics, tracing ...). The second one leaves out the named
plugins. Two wrk processes drive both at once, 32 keep-alive connections each, while the two
sidecars share one core: whatever the machine does at that moment, it does to both
(``--sequential`` drives them in turn instead, alternating the order every round, ABBA). The
report gives medians of per-round paired ratios:

- instructions per request, counted by valgrind's callgrind over the same requests for both
  (``with/without - 1``): deterministic to a fraction of a percent, whatever else the
  machine does, but user space only. Converted to microseconds (at the user time per
  instruction measured under wrk) plus the measured system time per request (the plugins'
  socket and file I/O), they give the modelled cost;
- throughput cost: ``1 - with/without`` requests per second, under wrk;
- CPU cost: the sidecar process's own CPU time per request, ``with/without - 1``.

The verdict is the larger of the modelled cost and the CPU cost. The model misses what a
plugin costs beyond its instructions: the cache misses of the memory it touches, which the
rest of each request has evicted (in callgrind's simulation of this CPU's 2 MiB L2, logs and
metrics add 30 % misses for 4.5 % instructions). So the CPU time decides when it is the
larger; it is
measured with both sidecars loaded at the same moments because this machine's speed swings
by 15 % within seconds: taken in turn, the paired ratios of two identical sidecars spread
from 0.83 to 1.17 (standard deviation 0.09); taken together, from 0.98 to 1.07 (0.02), with
a median of +0.4 % over 16 rounds. Every round starts both sidecars anew (``--restarts`` to
do it less often), since a process's own memory layout moves it by a few percent, and the
paired ratios' median is used, with a 95 % interval for it. A target is met only when both
agree (with ``--requests 0`` the larger of the two wall-clock figures decides). The sidecars
are pinned to the last CPU and wrk, the mock, PostgreSQL and Redis to the others
(``--no-pin`` lets them float), so the sidecars' throughput is what one core can do rather
than what the neighbours (the database inserting what persistence sends, above all) leave at
that moment.
``--base via`` measures against the bare forwarder instead (the plugin's worst case, reported
for comparison); plugins the measured ones need (``store`` for persistence) are kept.

    .venv/bin/python load_tests/bench_plugin_cost.py --without persistence --target 5
    .venv/bin/python load_tests/bench_plugin_cost.py --without ratelimit --target 10
    .venv/bin/python load_tests/bench_plugin_cost.py --without logs,metrics --target 5
    .venv/bin/python load_tests/bench_plugin_cost.py --without logs,metrics --target 5 \\
        --workload chat-typical-stream

Every sidecar is sent the same chat request, by default the ``minimal`` one (one short
message: the least work per request, so any plugin's largest share); ``--workload`` picks one
of ``load_tests/workloads`` instead: ``chat-typical`` is a support conversation (a system
prompt, one earlier exchange and a 130-word question, about 2 KB, answered with as many
words), ``chat-typical-stream`` the same, streamed. Reports of other workloads are saved with
the workload's name at the end of the file name.

Needs wrk (``apt-get install wrk``), PostgreSQL (TEST_PG_HOST/PORT/USER, default
127.0.0.1:5432 postgres, admin database ``test``) and Redis (TEST_REDIS_HOST/PORT).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.harness import (
    CHAT_BODY,
    MOCK_KEY,
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
    usage_rows,
    workload_body,
    workload_names,
    wrk,
)
from proxy.settings import DEFAULT_CHAIN

RESULTS = Path(__file__).resolve().parent / "results"
REDIS = {"host": os.environ.get("TEST_REDIS_HOST", "127.0.0.1"),
         "port": os.environ.get("TEST_REDIS_PORT", "6379")}
#: What each plugin needs before it in the chain when measured against the bare forwarder.
NEEDS = {"persistence": ["store"], "auth": ["store"]}


def dilated_intervals(factor: float) -> dict[str, str]:
    """The time-based batch intervals (metrics, persistence and access-log flushes)
    stretched ``factor`` times: under callgrind the sidecar runs about that much slower, and
    so its batches hold as many requests as at full speed, which is what they cost per
    request in production."""
    from plugins.logs import sidecar_settings as logs_settings
    from plugins.metrics import sidecar_settings as metrics_settings
    from plugins.persistence.config import declared as persistence_settings

    wanted = {"persistence.flush_interval_seconds",
              "log.access_flush_seconds"}
    return {setting.env: f"{float(setting.default) * factor:g}"
            for setting in [*metrics_settings(), *persistence_settings(), *logs_settings()]
            if setting.name in wanted and setting.env}


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
          connections: int, measure: bool, sequential: bool = False, body: str = CHAT_BODY
          ) -> dict[str, LoadResult]:
    """Load every target with chat requests (``body``) for ``seconds`` over ``connections``
    each: all at once (one wrk each), or in the given order when ``sequential``; with
    ``measure``, each sidecar's CPU time per request too."""
    def load(name: str) -> LoadResult:
        target = targets[name]
        return wrk(target.url, connections, seconds, api_key=api_key, body=body,
                   pid=target.pid if measure else None, cpus=cpus)

    if sequential:
        return {name: load(name) for name in targets}
    with ThreadPoolExecutor(len(targets)) as pool:
        return dict(zip(targets, pool.map(load, targets), strict=True))


def chains(without: list[str], base: str) -> dict[str, list[str]]:
    """``with`` and ``without`` plugin lists for the comparison."""
    unknown = [name for name in without if name not in DEFAULT_CHAIN]
    if unknown:
        raise SystemExit(f"not in the default chain: {', '.join(unknown)}")
    if base == "default":
        full = list(DEFAULT_CHAIN)
    else:
        wanted = {"via", *without, *(n for p in without for n in NEEDS.get(p, []))}
        full = [name for name in DEFAULT_CHAIN if name in wanted]
    return {"with": full, "without": [name for name in full if name not in without]}


def deployment_env(db_env: dict[str, str], upstream: str) -> dict[str, str]:
    """The environment of the deployment measured: PostgreSQL (``db_env``), Redis under a
    fresh key prefix, ``upstream`` with its key, a limit no run reaches, JSON logs at INFO
    (standard output off: each benchmark names its log file)."""
    return {**db_env, "MISTRAL_BASE_URL": upstream, "MISTRAL_API_KEY": MOCK_KEY,
            "REDIS_HOST": REDIS["host"], "REDIS_PORT": REDIS["port"],
            "SIDECAR_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
            "RATE_LIMIT_REQUESTS": "50000000", "RATE_LIMIT_WINDOW": "60",
            "LOG_LEVEL": "INFO", "SIDECAR_LOG_STDOUT": "false"}


def main() -> int:
    """Run the comparison, print and save the report; exit 1 when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--without", required=True,
                        help="comma-separated plugins whose cost is measured")
    parser.add_argument("--target", type=float, required=True, help="allowed cost in percent")
    parser.add_argument("--base", choices=("default", "via"), default="default")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds of load each new pair of sidecars gets before measuring")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000,
                        help="requests counted under callgrind per configuration (0: skip)")
    parser.add_argument("--dilation", type=float, default=30,
                        help="how much slower the sidecar runs under callgrind; time-based "
                        "batch intervals are stretched as much while counting")
    parser.add_argument("--restarts", type=int, default=0,
                        help="times both sidecars are started anew over the rounds (default: "
                        "every round, so that each paired ratio is an independent sample)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let every process float over all CPUs")
    parser.add_argument("--sequential", action="store_true",
                        help="drive the sidecars in turn (ABBA) instead of both at once")
    parser.add_argument("--workload", choices=workload_names(), default="minimal",
                        help="the chat request every sidecar is sent (load_tests/workloads); "
                        "minimal: one short message, the plugins' largest share")
    args = parser.parse_args()
    body = workload_body(args.workload)
    side_cpus, load_cpus = (None, None) if args.no_pin else split_cpus()
    without = [name for name in args.without.split(",") if name]
    configs = chains(without, args.base)

    loads: dict[str, list[LoadResult]] = {name: [] for name in configs}
    served = dict.fromkeys(configs, 0)
    instructions: dict[str, float] = {}
    counted_rate: dict[str, float] = {}
    with scratch_database() as db_env, tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp, \
            services_pinned(load_cpus):
        with mock_upstream(cpus=load_cpus) as mock, ExitStack() as stack:
            upstream = mock.url
            common = deployment_env(db_env, upstream)
            cli(common, "migrate")
            caller_key = "any-caller-key"
            if "auth" in configs["with"]:
                caller_key = bench_caller_key(common)
            envs = {name: {**common, "SIDECAR_PLUGINS": ",".join(plugins),
                           "SIDECAR_LOG_FILE": str(Path(tmp) / f"access-{name}.log")}
                    for name, plugins in configs.items()}
            if args.requests:
                stretched = dilated_intervals(args.dilation)
                for name, env in envs.items():
                    instructions[name], counted_rate[name] = instructions_per_request(
                        upstream, {**env, **stretched}, caller_key, args.requests,
                        args.connections, body)
                    served[name] += args.requests + 300
                    print(f"{name:>7}: {instructions[name] / 1e3:8.0f} k instructions/request "
                          f"({counted_rate[name]:.0f} req/s under callgrind)", flush=True)
            restarts = args.restarts or args.rounds
            rounds_per_start = math.ceil(args.rounds / max(1, min(restarts, args.rounds)))
            for round_ in range(args.rounds):
                if round_ % rounds_per_start == 0:
                    # New processes: two identical sidecars differ by several percent in
                    # CPU per request (memory layout, hash seeds), whatever their plugins.
                    stack.close()
                    targets = {name: stack.enter_context(sidecar(upstream, env,
                                                                 cpus=side_cpus))
                               for name, env in envs.items()}
                    for name, warm in drive(targets, args.warmup, caller_key, load_cpus,
                                            args.connections, measure=False,
                                            sequential=args.sequential, body=body).items():
                        served[name] += warm.requests
                order = list(configs) if round_ % 4 in (0, 3) else list(reversed(configs))
                measured = drive({name: targets[name] for name in order}, args.seconds,
                                 caller_key, load_cpus, args.connections, measure=True,
                                 sequential=args.sequential, body=body)
                for name in order:
                    result = measured[name]
                    loads[name].append(result)
                    served[name] += result.requests
                    print(f"round {round_ + 1:2d} {name:>7}: {result.requests_per_s:7.0f} "
                          f"req/s, {result.cpu_us_per_request:5.0f} us CPU/request, "
                          f"errors {result.errors}", flush=True)
        # The sidecars have stopped (SIGTERM flushes what they held): every answered request
        # of a chain with persistence must be in the usage log.
        expected = sum(served[name] for name, plugins in configs.items()
                       if "persistence" in plugins)
        recorded = usage_rows(db_env) if expected else 0

    with_, without_ = loads["with"], loads["without"]
    throughput_cost = 1 - statistics.median(
        a.requests_per_s / b.requests_per_s for a, b in zip(with_, without_, strict=True))
    cpu_ratios = [a.cpu_us_per_request / b.cpu_us_per_request
                  for a, b in zip(with_, without_, strict=True)]
    cpu_cost = statistics.median(cpu_ratios) - 1
    cpu_low, cpu_high = (ratio - 1 for ratio in median_interval(cpu_ratios))
    instruction_cost = (instructions["with"] / instructions["without"] - 1
                        if instructions else float("nan"))
    # Callgrind counts user-space instructions only; the kernel's share (system calls: the
    # sockets to Redis and PostgreSQL, the spool's writes) is measured as system CPU time.
    # User time per instruction, common to both, converts the counts into microseconds.
    user_us = {name: statistics.median(r.cpu_us_per_request - r.sys_us_per_request
                                       for r in results) for name, results in loads.items()}
    sys_us = {name: statistics.median(r.sys_us_per_request for r in results)
              for name, results in loads.items()}
    if instructions:
        per_instruction = statistics.median(user_us[name] / instructions[name]
                                            for name in configs)
        modelled = {name: instructions[name] * per_instruction + sys_us[name]
                    for name in configs}
        model_cost = modelled["with"] / modelled["without"] - 1
        # Instructions do not see cache misses; the measured CPU time does, with its noise.
        cost = max(model_cost, cpu_cost)
    else:
        model_cost = float("nan")
        cost = max(throughput_cost, cpu_cost)
    met = cost * 100 <= args.target
    errors = sum(r.errors for r in with_ + without_)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Cost of `{','.join(without)}` ({stamp})", "",
        f"Base: `{args.base}` chain on PostgreSQL and Redis; workload `{args.workload}`; "
        f"{args.connections} connections "
        f"(wrk) each, {args.rounds} rounds of {args.seconds:g} s (after {args.warmup:g} s of "
        "warm-up for each new pair of sidecars) "
        f"{'in ABBA order' if args.sequential else 'with both sidecars loaded at once'} on "
        f"{os.cpu_count()} cores: " + (
            f"the sidecars pinned to CPU {side_cpus}; wrk, the mock, PostgreSQL and Redis to "
            f"CPU {load_cpus}" if side_cpus else "every process on every core") +
        ". Medians; ratios are medians of per-round pairs.",
        "",
        f"- with: `{','.join(configs['with'])}`",
        f"- without: `{','.join(configs['without'])}`", "",
        "| sidecar | instructions/request | req/s under callgrind | req/s | CPU us/request "
        "| of which system | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, results in loads.items():
        counted = (f"{instructions[name] / 1e3:.0f} k | {counted_rate[name]:.0f}"
                   if instructions else "- | -")
        lines.append(f"| {name} | {counted} | "
                     f"{statistics.median(r.requests_per_s for r in results):.0f} | "
                     f"{statistics.median(r.cpu_us_per_request for r in results):.0f} | "
                     f"{sys_us[name]:.0f} | {sum(r.errors for r in results)} |")
    lines += ["", f"User-space instructions per request {instruction_cost:+.1%} (callgrind, "
              f"{args.requests} requests each, batch intervals x{args.dilation:g}); wall clock: "
              "throughput cost "
              f"{throughput_cost:.1%}, CPU time {cpu_cost:+.1%} (95% interval of that median: "
              f"{cpu_low:+.1%} to {cpu_high:+.1%}).", "",
              "Modelled cost (instructions at the measured user time per instruction, plus "
              f"the measured system time): {model_cost:.1%}.", "",
              f"Cost (the larger of the modelled cost and the CPU time cost): {cost:.1%} "
              f"against a target of <= {args.target:g}%: "
              f"{'met' if met and not errors else 'NOT met'}."]
    complete = recorded >= expected
    if expected:
        lines.append(f"Usage rows after the sidecars stopped: {recorded} for {expected} answered "
                     f"requests ({'all recorded' if complete else 'SOME MISSING'}).")
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    stem = (f"cost-{'-'.join(without)}" + ("" if args.base == "default" else f"-{args.base}")
            + ("" if args.workload == "minimal" else f"-{args.workload}"))
    (RESULTS / f"{stem}.md").write_text(report)
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {name: [r.__dict__ for r in results] for name, results in loads.items()}, indent=1)
        + "\n")
    print()
    print(report)
    return 0 if met and not errors and complete else 1


if __name__ == "__main__":
    sys.exit(main())
