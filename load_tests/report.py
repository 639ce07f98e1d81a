"""The benchmark's report: verdicts against the targets, the table, the machine it ran on, and
the files the current result is kept in (``latest.md``, ``latest.json``)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from load_tests.compare import Figures, paired_ratio
from load_tests.harness import REPO

#: The sidecar's throughput at least this share of the pass-through's (issue #19, item 5).
THROUGHPUT_TARGET = 0.60
#: The sidecar's resident memory after the load at most this many MB (10^6 bytes).
RSS_TARGET_MB = 80.0
#: Name of the contenders in the report (keys of the figures).
DIRECT, PASS_THROUGH, SIDECAR = "direct", "pass-through", "sidecar"


@dataclass(frozen=True)
class Verdict:
    """One measure against its target."""

    name: str
    label: str
    value: float
    shown: str
    target: str
    met: bool


def verdicts(figures: dict[str, Figures]) -> list[Verdict]:
    """The sidecar's throughput against the pass-through's and its memory after the load,
    each against its target."""
    side, floor = figures[SIDECAR], figures[PASS_THROUGH]
    ratio = paired_ratio(side, floor)
    rss = side.rss_mb if side.rss_mb is not None else float("nan")
    return [
        Verdict("throughput_ratio", "sidecar throughput vs pass-through", ratio,
                f"{ratio:.1%}", f">= {THROUGHPUT_TARGET:.0%}", ratio >= THROUGHPUT_TARGET),
        Verdict("rss_mb", "sidecar RSS after load", rss, f"{rss:.1f} MB",
                f"<= {RSS_TARGET_MB:g} MB", rss <= RSS_TARGET_MB),
    ]


def side_notes(figures: dict[str, Figures]) -> dict[str, float]:
    """Figures worth reading beside the verdicts: the pass-through's CPU per request over the
    sidecar's (the throughput share a sidecar bound by its own core would reach: steadier than
    throughput on a busy machine), and the latency the sidecar adds to the pass-through's."""
    side, floor = figures[SIDECAR], figures[PASS_THROUGH]
    notes = {"added_p50_1_ms": side.p50_1_ms - floor.p50_1_ms,
             "added_stream_ttfb_ms": side.stream_ttfb_ms - floor.stream_ttfb_ms}
    if side.cpu_us_per_request and floor.cpu_us_per_request:
        notes["cpu_ratio"] = floor.cpu_us_per_request / side.cpu_us_per_request
    return notes


def machine() -> dict[str, Any]:
    """The CPU model (``/proc/cpuinfo``), core count, Python version and system."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform()}


def commit() -> str | None:
    """The checkout's commit, ``+ local changes`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" + local changes" if dirty.strip() else "")


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(figures: dict[str, Figures], connections: int) -> list[str]:
    """The figures as a Markdown table, columns padded so that it reads in a terminal too."""
    rows = [[f"req/s @{connections}", f"p50 @{connections} ms", f"p99 @{connections} ms",
             "CPU us/req", "p50 @1 ms", "stream TTFB ms", "RSS after load MB", "errors"]]
    names = ["target", *figures]
    for fig in figures.values():
        rows.append([_cell(fig.requests_per_s, 0), _cell(fig.p50_ms, 2), _cell(fig.p99_ms, 2),
                     _cell(fig.cpu_us_per_request, 0), _cell(fig.p50_1_ms, 3),
                     _cell(fig.stream_ttfb_ms, 2), _cell(fig.rss_mb, 1), str(fig.errors)])
    first = max(len(name) for name in names)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for name, row in zip(names, rows, strict=True):
        cells = [name.ljust(first), *(cell.rjust(w) for cell, w in zip(row, widths, strict=True))]
        lines.append("| " + " | ".join(cells) + " |")
        if name == "target":
            lines.append("| " + " | ".join(["-" * first, *("-" * (w - 1) + ":" for w in widths)])
                         + " |")
    return lines


def verdict_lines(checks: list[Verdict], notes: dict[str, float]) -> list[str]:
    """The verdicts, one line each, then the side notes."""
    lines = [f"- {v.label}: {v.shown} (target {v.target}): {'met' if v.met else 'NOT MET'}"
             for v in checks]
    if "cpu_ratio" in notes:
        lines.append(f"- CPU per request, pass-through / sidecar: {notes['cpu_ratio']:.1%} "
                     "(the throughput share a sidecar bound by its own core would reach)")
    lines.append(f"- latency the sidecar adds: p50 @1 {notes['added_p50_1_ms']:+.3f} ms, "
                 f"stream TTFB {notes['added_stream_ttfb_ms']:+.3f} ms")
    return lines


def document(result: dict[str, Any], figures: dict[str, Figures], checks: list[Verdict],
             notes: dict[str, float]) -> str:
    """The whole report in Markdown: what ran where, the table, the verdicts."""
    setup, host = result["setup"], result["machine"]
    lines = [
        f"# Sidecar against the pass-through ({result['date']})", "",
        f"- machine: {host['cpu']}, {host['cores']} cores, Python {host['python']}, "
        f"{host['system']}",
        f"- command: `{result['command']}`" + (f" at {result['commit']}"
                                               if result["commit"] else ""),
        f"- sidecar: {setup['deployment']}, chain `{','.join(setup['chain'])}`, JSON access "
        "lines at INFO into a file",
        f"- load: wrk, workload `{setup['workload']}`, {setup['connections']} connections, "
        f"median of {setup['rounds']} shuffled rounds of {setup['seconds']:g} s; "
        f"{setup['placement']}",
        "", *table(figures, setup["connections"]), "", *verdict_lines(checks, notes)]
    return "\n".join(lines) + "\n"


def result_data(setup: dict[str, Any], command: str, figures: dict[str, Figures],
                checks: list[Verdict], notes: dict[str, float]) -> dict[str, Any]:
    """Everything ``latest.json`` holds."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "command": command, "commit": commit(), "setup": setup,
        "targets": {name: asdict(fig) for name, fig in figures.items()},
        "verdicts": {v.name: {"value": v.value, "target": v.target, "met": v.met}
                     for v in checks},
        "notes": notes}


def write(directory: Path, result: dict[str, Any], markdown: str) -> list[Path]:
    """Write ``latest.md`` and ``latest.json`` into ``directory`` (replacing the previous
    ones); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "latest.md", directory / "latest.json"]
    paths[0].write_text(markdown)
    paths[1].write_text(json.dumps(result, indent=2) + "\n")
    return paths
