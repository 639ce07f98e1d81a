"""Log lines go through a queue to a writing thread: they are out soon after they are logged
without anyone asking, none is lost at shutdown, lines of other libraries are JSON with the
request's id, and a real sidecar process writes JSON to standard output."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.conftest import MockUpstream, SidecarFactory, SidecarProcess, wait_for
from tests.observability.obs_support import MODEL, access_lines, raw_post, read_lines
from tests.observability.obs_thirdparty import LOGGER, MESSAGE
from tests.observability.obs_thirdparty import PLUGIN as THIRDPARTY

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def test_lines_follow_their_requests_within_the_batching_interval(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="logs", SIDECAR_LOG_STDOUT="false",
                                  SIDECAR_LOG_FILE=str(log),
                                  SIDECAR_LOG_ACCESS_FLUSH_SECONDS="0.3")
    for n in range(3):
        await raw_post(sidecar, "/v1/models", None, f"later-{n}", method="GET")

    def written() -> list[str]:
        ids = [line["request_id"] for line in access_lines(read_lines(log))]
        return ids if len(ids) == 3 else []

    # Nobody asks for a flush: the writing thread wakes by itself, once per interval.
    assert await wait_for(written, timeout=3) == ["later-0", "later-1", "later-2"]


async def test_every_line_of_a_burst_of_requests_is_written_by_shutdown(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="logs", SIDECAR_LOG_STDOUT="false",
                                  SIDECAR_LOG_FILE=str(log))
    ids = [f"burst-{n:03d}" for n in range(300)]
    async with aiohttp.ClientSession() as http:

        async def get(request_id: str) -> int:
            async with http.get(sidecar.url + "/v1/models",
                                headers={"X-Request-ID": request_id}) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(get(request_id) for request_id in ids))
    assert set(statuses) == {200}
    await sidecar.server.close()
    assert sorted(line["request_id"] for line in access_lines(read_lines(log))) == ids
    # the writing thread is gone and the file closed: later lines go elsewhere
    logging.getLogger("mistral_sidecar.access").warning({"message": "after", "x": 1})
    assert "after" not in log.read_text()


async def test_a_line_another_library_logs_during_a_request_is_json_with_its_id(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=f"logs,{THIRDPARTY}",
                                  SIDECAR_LOG_STDOUT="false", SIDECAR_LOG_FILE=str(log))
    status, _ = await raw_post(sidecar, "/v1/models", None, "with-library", method="GET")
    assert status == 200

    def library_lines() -> list[dict[str, object]]:
        return [line for line in read_lines(log) if line["logger"] == LOGGER]

    (line,) = await wait_for(library_lines, timeout=2)
    assert line["request_id"] == "with-library"
    assert (line["level"], line["message"], line["peer"]) == \
        ("WARNING", MESSAGE, "peer 10.0.0.7")
    assert "ConnectionResetError: connection reset by peer" in str(line["exc_info"])
    assert log.read_text().isascii()


async def test_a_sidecar_process_logs_json_to_stdout(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream) -> None:
    sidecar = spawn_sidecar(SIDECAR_PLUGINS_CHAIN="logs,metrics,tracing",
                            MISTRAL_BASE_URL=mock_upstream.url)
    async with aiohttp.ClientSession() as http:
        for n in range(20):
            async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT,
                                 headers={"X-Request-ID": f"proc-{n}"}) as resp:
                assert resp.status == 200
    sidecar.signal(signal.SIGTERM)
    assert sidecar.proc.wait(timeout=20) == 0
    output = sidecar.output().splitlines()
    # Plain text only before the plugin starts (configuration notices, the banner) and once
    # it has stopped (the core's last words).
    first = next(n for n, line in enumerate(output) if line.startswith("{"))
    last = max(n for n, line in enumerate(output) if line.startswith("{"))
    lines = [json.loads(line) for line in output[first:last + 1]]
    access = access_lines(lines)
    assert [line["request_id"] for line in access] == [f"proc-{n}" for n in range(20)]
    assert all(line["status"] == 200 and line["completion_tokens"] > 0 for line in access)
    assert any(line["logger"] == "mistral_sidecar.server" and line["message"] == "listening"
               for line in lines)
