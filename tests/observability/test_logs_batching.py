"""Access lines are written in batches: soon after their request without anyone asking, at
once when configured so, and none is lost at shutdown or in a real sidecar process."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp

from plugins.logs import LOGS
from tests.conftest import MockUpstream, SidecarFactory, SidecarProcess, wait_for
from tests.observability.obs_support import MODEL, access_lines, raw_post, read_lines

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def test_lines_follow_their_requests_within_the_interval(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS="logs", SIDECAR_LOG_STDOUT="false",
                                  SIDECAR_LOG_FILE=str(log),
                                  SIDECAR_ACCESS_LOG_FLUSH_SECONDS="0.05")
    for n in range(3):
        await raw_post(sidecar, "/v1/models", None, f"later-{n}", method="GET")

    def written() -> list[str]:
        ids = [line["request_id"] for line in access_lines(read_lines(log))]
        return ids if len(ids) == 3 else []

    assert await wait_for(written) == ["later-0", "later-1", "later-2"]


async def test_with_no_delay_a_line_is_out_before_its_caller_reads_the_response(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS="logs", SIDECAR_LOG_STDOUT="false",
                                  SIDECAR_LOG_FILE=str(log), SIDECAR_ACCESS_LOG_FLUSH_SECONDS="0")
    for n in range(3):
        await raw_post(sidecar, "/v1/models", None, f"now-{n}", method="GET")
        assert access_lines(read_lines(log))[-1]["request_id"] == f"now-{n}"


async def test_by_default_lines_are_out_within_a_tenth_of_a_second(
        start_sidecar: SidecarFactory, base_env: dict[str, str], tmp_path: Path) -> None:
    base_env.pop("SIDECAR_ACCESS_LOG_FLUSH_SECONDS")
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS="logs", SIDECAR_LOG_STDOUT="false",
                                  SIDECAR_LOG_FILE=str(log))
    assert sidecar.app[LOGS].access is not None
    assert sidecar.app[LOGS].access.interval == 0.1
    for n in range(3):
        await raw_post(sidecar, "/v1/models", None, f"soon-{n}", method="GET")
    await asyncio.sleep(0.3)
    assert [line["request_id"] for line in access_lines(read_lines(log))] == \
        ["soon-0", "soon-1", "soon-2"]


async def test_shutdown_writes_what_is_queued(start_sidecar: SidecarFactory,
                                              tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS="logs", SIDECAR_LOG_STDOUT="false",
                                  SIDECAR_LOG_FILE=str(log),
                                  SIDECAR_ACCESS_LOG_FLUSH_SECONDS="60")
    for n in range(5):
        await raw_post(sidecar, "/v1/models", None, f"queued-{n}", method="GET")
    assert not access_lines(read_lines(log))
    await sidecar.server.close()
    assert len(access_lines(read_lines(log))) == 5


async def test_a_sidecar_process_logs_json_to_stdout(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream) -> None:
    sidecar = spawn_sidecar(SIDECAR_PLUGINS="logs,metrics,tracing",
                            MISTRAL_BASE_URL=mock_upstream.url)
    async with aiohttp.ClientSession() as http:
        for n in range(20):
            async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT,
                                 headers={"X-Request-ID": f"proc-{n}"}) as resp:
                assert resp.status == 200
    sidecar.signal(signal.SIGTERM)
    assert sidecar.proc.wait(timeout=20) == 0
    output = sidecar.output().splitlines()
    # the core prints its banner and, once the JSON handlers are gone, its last words
    lines = [json.loads(line) for line in output if line.startswith("{")]
    assert len(lines) >= len(output) - 3
    access = access_lines(lines)
    assert [line["request_id"] for line in access] == [f"proc-{n}" for n in range(20)]
    assert all(line["status"] == 200 and line["completion_tokens"] > 0 for line in access)
    assert any(line["logger"] == "mistral_sidecar.server" and line["message"] == "listening"
               for line in lines)


async def test_batches_written_directly_rotate_like_single_lines(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    """With only the sidecar's handlers on the root logger (as in production) a batch goes to
    the file in one write, rotating where a line would not fit."""
    import logging

    root = logging.getLogger()
    others = root.handlers[:]
    root.handlers = []
    try:
        logs = tmp_path / "logs"
        sidecar = await start_sidecar(
            SIDECAR_PLUGINS="logs", SIDECAR_LOG_STDOUT="false",
            SIDECAR_LOG_FILE=str(logs / "sidecar.log"), SIDECAR_LOG_FILE_MAX_BYTES="4096",
            SIDECAR_LOG_FILE_BACKUP_COUNT="20", SIDECAR_ACCESS_LOG_FLUSH_SECONDS="60")
        for n in range(30):
            await raw_post(sidecar, "/v1/models", None, f"direct-{n:02d}", method="GET")
        access = sidecar.app[LOGS].access
        assert access is not None and access._direct_handlers() is not None
        await sidecar.server.close()
    finally:
        root.handlers = others
    files = sorted(logs.iterdir(), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit()
                   else 0)
    assert len(files) > 3
    ids = []
    for path in files:
        assert path.stat().st_size <= 4096
        ids += [line["request_id"] for line in access_lines(read_lines(path))]
    assert ids == [f"direct-{n:02d}" for n in range(30)]
