"""The benchmark command users run (``python -m load_tests``, load_tests/README.md) works: one
short run of the default deployment (PostgreSQL and Redis) prints the table and the verdicts
and writes the result with every figure in it.

Seconds of load only, so the figures mean nothing here: about 20 s in all on an idle machine
(starting the processes and creating the database and a key take half of it), stopped after
90 s on a very busy one. The result goes to a temporary directory, never over the committed
``load_tests/results/latest.*``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Figures each proxy (not the upstream itself) must report as positive numbers.
FIGURES = ("requests_per_s", "p50_ms", "p99_ms", "cpu_us_per_request", "p50_1_ms",
           "stream_ttfb_ms", "rss_mb")


def test_benchmark_command_prints_and_writes_the_result(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed; the benchmark command needs it: apt-get install wrk "
                    "(.ci/test installs it)")
    arguments = ["--seconds", "1", "--rounds", "1", "--output", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "load_tests", *arguments], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        # SIGINT, not SIGKILL: the command then stops what it started and drops its database.
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the benchmark command took more than 90 s: {err[-3000:]}")
    # 0: targets met, 1: a target missed (expected on a busy test machine); 3 would mean
    # failed requests, anything else a crash.
    assert proc.returncode in (0, 1), out + err[-3000:]

    assert "| target" in out and "req/s @32" in out and "RSS after load MB" in out, out
    for row in ("| direct ", "| pass-through ", "| sidecar "):
        assert row in out, out
    assert "sidecar throughput vs pass-through:" in out and "(target >= 60%)" in out, out
    assert "sidecar RSS after load:" in out and "(target <= 80 MB)" in out, out

    assert (tmp_path / "latest.md").read_text() in out
    result = json.loads((tmp_path / "latest.json").read_text())
    assert {"date", "machine", "command", "setup", "targets", "verdicts"} <= result.keys()
    assert result["machine"]["cpu"] and result["machine"]["cores"] >= 1
    assert result["machine"]["python"]
    assert result["command"] == shlex.join(["python", "-m", "load_tests", *arguments])
    assert result["setup"]["deployment"] == "PostgreSQL + Redis"
    assert result["setup"]["connections"] == 32
    for name in ("pass-through", "sidecar"):
        figures = result["targets"][name]
        for figure in FIGURES:
            assert figures[figure] > 0, (name, figure, figures)
        assert figures["errors"] == 0, (name, figures)
    assert result["targets"]["direct"]["requests_per_s"] > 0
    for verdict in ("throughput_ratio", "rss_mb"):
        assert result["verdicts"][verdict]["value"] > 0, result["verdicts"]
        assert isinstance(result["verdicts"][verdict]["met"], bool)
