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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MOCK_KEY = "bench-upstream-key"
CHAT_BODY = json.dumps({"model": "mistral-small-latest",
                        "messages": [{"role": "user", "content": "benchmark me"}]})


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
def process(args: list[str], ready_url: str, env: Mapping[str, str] | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` until the block ends; output goes to a temp log."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_ready(ready_url, proc)
        yield proc
    except RuntimeError:
        print(Path(log.name).read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass(frozen=True)
class Target:
    """A server under test: its base URL and the process whose CPU time is measured."""

    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def mock_upstream(token_interval_ms: float = 0) -> Iterator[Target]:
    """The mock Mistral API in its own process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([PYTHON, "-m", "proxy.cli", "mock-upstream", "--port", str(port),
                  "--api-key", MOCK_KEY, "--token-interval-ms", str(token_interval_ms)],
                 url + "/__mock__/settings") as proc:
        yield Target(url, proc.pid)


@contextlib.contextmanager
def minimal_proxy(upstream: str) -> Iterator[Target]:
    """The floor pass-through in its own process."""
    port = free_port()
    with process([PYTHON, str(REPO / "load_tests" / "minimal_proxy.py"), "--port", str(port),
                  "--upstream", upstream], f"http://127.0.0.1:{port}/healthz") as proc:
        yield Target(f"http://127.0.0.1:{port}", proc.pid)


@contextlib.contextmanager
def sidecar(upstream: str, env: Mapping[str, str] | None = None) -> Iterator[Target]:
    """``mistral-sidecar serve`` in its own process with ``env``."""
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="bench-sidecar-")
    full = {"MISTRAL_BASE_URL": upstream, "MISTRAL_API_KEY": MOCK_KEY, "SIDECAR_PORT": str(port),
            "SIDECAR_DATA_DIR": data_dir, "LOG_LEVEL": "WARNING"}
    full.update(env or {})
    try:
        with process([PYTHON, "-m", "proxy.cli", "serve"], f"http://127.0.0.1:{port}/healthz",
                     full) as proc:
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
    requests: int = 0

    def row(self, name: str) -> str:
        """One aligned line for reports."""
        return (f"{name:<22} {self.requests_per_s:>10.0f} req/s   p50 {self.p50_ms:7.2f} ms"
                f"   p99 {self.p99_ms:7.2f} ms   errors {self.errors}")


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
        pid: int | None = None) -> LoadResult:
    """Drive ``url`` with wrk (one thread) and parse its report; with ``pid``, also measure
    that process's CPU time per request."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for benchmarks: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.format(body=json.dumps(body), key=api_key))
    threads = max(1, min(connections, 1))
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency",
         "-s", script.name, url + path],
        capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before if pid else float("nan")
    os.unlink(script.name)
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
    return LoadResult(rps, p50, p99, errors, cpu * 1e6 / max(total, 1), total)


async def _stream_ttfb(url: str, api_key: str, count: int) -> list[float]:
    body = json.loads(CHAT_BODY) | {"stream": True}
    samples = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.post(url + "/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {api_key}"}) as resp:
                await resp.content.readany()
                samples.append((time.perf_counter() - started) * 1000)
                await resp.read()
    return samples


def stream_ttfb_ms(url: str, api_key: str = MOCK_KEY, count: int = 200) -> float:
    """Median time to the first byte of a streamed chat answer, one request at a time."""
    samples = asyncio.run(_stream_ttfb(url, api_key, count))
    return statistics.median(samples[10:])
