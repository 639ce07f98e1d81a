"""Shared pieces for the benchmarks: start processes, drive load with wrk, time streams.

Benchmarks only talk to processes they start on 127.0.0.1, with bounded request counts and
durations, and stop everything they started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg

REPO = Path(__file__).resolve().parent.parent
#: The PostgreSQL server benchmarks create their scratch databases on (from the ``postgres``
#: database, which every server has).
PG = {"host": os.environ.get("TEST_PG_HOST", "127.0.0.1"),
      "port": os.environ.get("TEST_PG_PORT", "5432"),
      "user": os.environ.get("TEST_PG_USER", "postgres")}
#: Prefixes of the variables that configure a sidecar: the processes benchmarks start get only
#: the settings the benchmark chose, not whatever the shell that runs it has set.
SETTING_PREFIXES = ("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_", "OTEL_",
                    "LOG_LEVEL", "ENVIRONMENT", "PROMETHEUS_MULTIPROC_DIR")
PYTHON = sys.executable
MOCK_KEY = "bench-upstream-key"
CHAT_BODY = json.dumps({"model": "mistral-small-latest",
                        "messages": [{"role": "user", "content": "benchmark me"}]})
#: Request bodies the benchmarks can send besides :data:`CHAT_BODY` (``minimal``), by name.
WORKLOADS = Path(__file__).resolve().parent / "workloads"


def workload_names() -> list[str]:
    """``minimal`` (:data:`CHAT_BODY`: the least work per request, so the largest share for
    any plugin) and the name of every body in ``load_tests/workloads``."""
    return ["minimal", *sorted(path.stem for path in WORKLOADS.glob("*.json"))]


def workload_body(name: str) -> str:
    """The chat request body of workload ``name``, as compact JSON."""
    if name == "minimal":
        return CHAT_BODY
    path = WORKLOADS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"no workload {name!r}: choose one of {', '.join(workload_names())}")
    return json.dumps(json.loads(path.read_text()), separators=(",", ":"))


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without sidecar settings (:data:`SETTING_PREFIXES`), with
    ``env`` over it."""
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith(SETTING_PREFIXES)}
    return clean | dict(env or {})


def cli(env: Mapping[str, str], *args: str) -> str:
    """Run ``mistral-sidecar ARGS`` with ``env`` (see :func:`child_env`); its standard
    output."""
    done = subprocess.run([PYTHON, "-m", "proxy.cli", *args], env=child_env(env),
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"mistral-sidecar {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def bench_caller_key(env: Mapping[str, str]) -> str:
    """A new sidecar key (owner ``bench``, role ``user``) in the database of ``env``."""
    return cli(env, "keys", "create", "--owner", "bench", "--role", "user"
               ).strip().splitlines()[-1]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until ``url`` answers anything over HTTP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(args: list[str], ready_url: str, env: Mapping[str, str] | None = None,
            cwd: Path = REPO) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` with ``env`` (see :func:`child_env`) in ``cwd`` (this checkout by
    default) until the block ends.

    Output goes to a temporary file, never a pipe: a pipe nobody reads fills up and blocks the
    process. The file is kept, and its end printed, only when the process failed to start.
    """
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(args, env=child_env(env), stdout=log, stderr=subprocess.STDOUT,
                            cwd=cwd)
    failed = False
    try:
        wait_ready(ready_url, proc)
        yield proc
    except RuntimeError:
        failed = True
        print(Path(log.name).read_text()[-3000:], file=sys.stderr)
        print(f"(whole output in {log.name})", file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if not failed:
            Path(log.name).unlink(missing_ok=True)


def pinned(args: list[str], cpus: str | None) -> list[str]:
    """``args`` run on the CPUs ``cpus`` (``taskset`` list syntax), or as they are."""
    if cpus is None or shutil.which("taskset") is None:
        return args
    return ["taskset", "-c", cpus, *args]


#: Local services the sidecars talk to; their processes share the load generator's CPUs while
#: a benchmark runs (see :func:`services_pinned`).
SERVICES = ("postgres", "redis-server")


def _cpu_set(cpus: str) -> set[int]:
    found: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


@contextlib.contextmanager
def services_pinned(cpus: str | None) -> Iterator[int]:
    """Move every thread of the local PostgreSQL and Redis to ``cpus`` for the block, then
    give them back their CPUs; yields how many threads were moved.

    Otherwise the database's work (parsing, inserting and logging the rows persistence sends)
    runs on the sidecar's own CPU too: it takes time slices from the sidecar and evicts its
    caches, and the sidecar's throughput then measures the database as much as the plugin.
    In production the database runs elsewhere.
    """
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield 0
        return
    wanted = _cpu_set(cpus)
    saved: dict[int, set[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() not in SERVICES:
                continue
            for task in (proc / "task").iterdir():
                tid = int(task.name)
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, wanted)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to move
    try:
        yield len(saved)
    finally:
        for tid, previous in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, previous)


def split_cpus() -> tuple[str | None, str | None]:
    """(CPUs for the sidecar under test, CPUs for everything else): the last CPU for the
    sidecar alone, the rest for load, mock and databases (:func:`services_pinned`);
    ``(None, None)`` on one CPU.

    Pinned, the sidecar's throughput is what its one core can do, not what is left of a core
    after the load generator and the mock took their share at that moment.
    """
    count = os.cpu_count() or 1
    if count < 2:
        return None, None
    return str(count - 1), f"0-{count - 2}" if count > 2 else "0"


@dataclass(frozen=True)
class Target:
    """A server under test: its base URL and the process whose CPU time is measured."""

    url: str
    pid: int


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def rss_bytes(pid: int) -> tuple[int, int]:
    """(resident set size now, its peak so far) of a process in bytes, from
    ``/proc/PID/status`` (VmRSS, VmHWM)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024  # the kernel writes kB, meaning KiB
    return found["VmRSS"], found["VmHWM"]


@contextlib.contextmanager
def mock_upstream(token_interval_ms: float = 0, cpus: str | None = None) -> Iterator[Target]:
    """The mock Mistral API in its own process (on ``cpus`` when given)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(pinned([PYTHON, "-m", "proxy.cli", "mock-upstream", "--port", str(port),
                         "--api-key", MOCK_KEY, "--token-interval-ms", str(token_interval_ms)],
                        cpus),
                 url + "/__mock__/settings") as proc:
        yield Target(url, proc.pid)


@contextlib.contextmanager
def minimal_proxy(upstream: str, cpus: str | None = None) -> Iterator[Target]:
    """The floor pass-through in its own process (on ``cpus`` when given)."""
    port = free_port()
    with process(pinned([PYTHON, str(REPO / "load_tests" / "minimal_proxy.py"), "--port",
                         str(port), "--upstream", upstream], cpus),
                 f"http://127.0.0.1:{port}/healthz") as proc:
        yield Target(f"http://127.0.0.1:{port}", proc.pid)


@contextlib.contextmanager
def sidecar(upstream: str, env: Mapping[str, str] | None = None,
            cpus: str | None = None, tree: Path = REPO) -> Iterator[Target]:
    """``mistral-sidecar serve`` in its own process with ``env`` (on ``cpus`` when given),
    run from ``tree``: another checkout's code (``python -m`` imports from the working
    directory first) with this one's virtual environment."""
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="bench-sidecar-")
    # The names from before SIDECAR_SERVER_PORT and SIDECAR_SERVER_DATA_DIR: deprecated, but
    # also understood by a ``tree`` that predates them.
    full = {"MISTRAL_BASE_URL": upstream, "MISTRAL_API_KEY": MOCK_KEY,
            "SIDECAR_PORT": str(port), "SIDECAR_DATA_DIR": data_dir,
            "LOG_LEVEL": "WARNING"}
    full.update(env or {})
    try:
        with process(pinned([PYTHON, "-m", "proxy.cli", "serve"], cpus),
                     f"http://127.0.0.1:{port}/healthz", full, cwd=tree) as proc:
            yield Target(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class LoadResult:
    """What wrk measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float = float("nan")
    #: The system (kernel) part of ``cpu_us_per_request``.
    sys_us_per_request: float = float("nan")
    requests: int = 0


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


def _to_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, connections: int, seconds: float, api_key: str = MOCK_KEY,
        path: str = "/v1/chat/completions", body: str = CHAT_BODY,
        pid: int | None = None, cpus: str | None = None) -> LoadResult:
    """Drive ``url`` with wrk (one thread) for ``seconds`` (whole seconds, at least one: wrk
    takes no fractions) and parse its report; with ``pid``, also measure that process's CPU
    time per request."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for benchmarks: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.format(body=json.dumps(body), key=api_key))
    threads = max(1, min(connections, 1))
    duration = f"{max(1, round(seconds))}s"
    try:
        user_before, sys_before = cpu_split(pid) if pid else (0.0, 0.0)
        out = subprocess.run(
            pinned(["wrk", "-t", str(threads), "-c", str(connections), "-d", duration,
                    "--latency", "-s", script.name, url + path], cpus),
            capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
        user_after, sys_after = cpu_split(pid) if pid else (float("nan"), float("nan"))
    finally:
        os.unlink(script.name)
    cpu = user_after - user_before + sys_after - sys_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    distribution = out.split("Latency Distribution", 1)[1]
    p50 = _to_ms(re.search(r"^\s*50%\s+(\S+)", distribution, re.M).group(1))  # type: ignore[union-attr]
    p99 = _to_ms(re.search(r"^\s*99%\s+(\S+)", distribution, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out):
        errors += sum(int(g) for g in m.groups())
    return LoadResult(rps, p50, p99, errors, cpu_us_per_request=cpu * 1e6 / max(total, 1),
                      sys_us_per_request=(sys_after - sys_before) * 1e6 / max(total, 1),
                      requests=total)


async def _stream_ttfb(url: str, api_key: str, count: int, chat_body: str) -> list[float]:
    body = json.loads(chat_body) | {"stream": True}
    samples = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.post(url + "/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {api_key}"}) as resp:
                await resp.content.readany()
                samples.append((time.perf_counter() - started) * 1000)
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: streamed request answered {resp.status}")
    return samples


def stream_ttfb_ms(url: str, api_key: str = MOCK_KEY, count: int = 200,
                   body: str = CHAT_BODY) -> float:
    """Median time to the first byte of a streamed chat answer (``body`` with ``stream``
    on), one request at a time; the first ten are warm-up."""
    samples = asyncio.run(_stream_ttfb(url, api_key, count, body))
    return statistics.median(samples[10:])


async def _post_many(url: str, api_key: str, count: int, connections: int,
                     body: str = CHAT_BODY) -> int:
    """``count`` chat requests (``body``) over ``connections`` concurrent connections; how many
    got 2xx."""
    ok = 0
    gate = asyncio.Semaphore(connections)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections)) as http:

        async def one() -> None:
            nonlocal ok
            async with gate, http.post(url + "/v1/chat/completions", data=body,
                                       headers=headers) as resp:
                await resp.read()
                ok += 200 <= resp.status < 300

        await asyncio.gather(*(one() for _ in range(count)))
    return ok


def instructions_per_request(upstream: str, env: Mapping[str, str], api_key: str,
                             requests: int = 1000, connections: int = 16,
                             body: str = CHAT_BODY, tree: Path = REPO) -> tuple[float, float]:
    """Instructions the sidecar (run from ``tree``, as :func:`sidecar` does) executes per
    chat request, counted by valgrind's callgrind, and the requests per second it served
    while counted.

    Unlike time, the count does not depend on what else the machine is doing: the same
    build, configuration and load give the same count to within a fraction of a percent. The
    sidecar starts uninstrumented (at full speed), is warmed up, then counts exactly
    ``requests`` requests. Kernel time (system calls) is not included. Under valgrind the
    sidecar runs some 30 times slower, so batches formed over a fixed time (metrics,
    database writes) hold fewer requests than at full speed unless ``env`` stretches their
    intervals by as much (compare the requests per second returned here with wrk's).
    """
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is needed for instruction counts: apt-get install valgrind")
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
    # Deprecated names, understood by a ``tree`` from before the current ones too.
    full = {"MISTRAL_BASE_URL": upstream, "MISTRAL_API_KEY": MOCK_KEY,
            "SIDECAR_PORT": str(port), "SIDECAR_DATA_DIR": str(work / "data"),
            "LOG_LEVEL": "WARNING", **env}
    url = f"http://127.0.0.1:{port}"
    try:
        with process(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                      f"--callgrind-out-file={work}/callgrind.out", PYTHON, "-m", "proxy.cli",
                      "serve"], url + "/healthz", full, cwd=tree) as proc:
            asyncio.run(_post_many(url, api_key, 300, connections, body))  # warm-up, uncounted
            for command in (["-i", "on"], ["-z"]):
                subprocess.run(["callgrind_control", *command, str(proc.pid)],
                               capture_output=True, check=True, timeout=60)
            started = time.perf_counter()
            ok = asyncio.run(_post_many(url, api_key, requests, connections, body))
            rate = requests / (time.perf_counter() - started)
            if ok != requests:
                raise RuntimeError(f"{requests - ok} of {requests} requests failed")
            subprocess.run(["callgrind_control", "-d", str(proc.pid)],
                           capture_output=True, check=True, timeout=120)
        # The explicit dump (callgrind.out.1) holds the counted requests; callgrind.out, written
        # at exit, the shutdown.
        counted = work / "callgrind.out.1"
        match = re.search(r"^(?:summary|totals): (\d+)", counted.read_text(), re.M)
        if match is None:
            raise RuntimeError(f"no totals in {counted}")
        return int(match.group(1)) / requests, rate
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(prefix: str = "bench") -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database for one run, dropped afterwards; yields its ``DB_*``
    environment."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = f"host={PG['host']} port={PG['port']} user={PG['user']} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"DB_HOST": PG["host"], "DB_PORT": PG["port"], "DB_USER": PG["user"],
               "DB_NAME": name}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

