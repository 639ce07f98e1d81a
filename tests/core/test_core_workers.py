"""Several worker processes on one port: all serve, metrics add up, SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MockUpstream, SidecarProcess, wait_for
from tests.core.test_core_process import _cli

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def test_workers_share_the_port_and_drain_together(
    mock_upstream: MockUpstream, spawn_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = spawn_sidecar("--workers", "2", MISTRAL_BASE_URL=mock_upstream.url,
                            SIDECAR_PLUGINS_CHAIN="metrics,store,persistence,via",
                            SIDECAR_DB_MIGRATE_ON_START="true")
    workers = _children(sidecar.proc.pid)
    assert len(workers) == 2, sidecar.output()

    async def one() -> int:
        # A connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions", json=CHAT,
            headers={"Authorization": "Bearer x"}
        ) as resp:
            return resp.status

    statuses = await asyncio.gather(*[one() for _ in range(40)])
    assert statuses == [200] * 40

    async def served() -> bool:
        # Each worker publishes its counts within SIDECAR_METRICS_FLUSH_SECONDS.
        async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/metrics") as resp:
            text = await resp.text()
        return 40 == sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "mistral_sidecar_requests_total"
            and sample.labels.get("operation") == "chat.complete"
        )

    await wait_for(served, timeout=10, interval=0.2)

    sidecar.signal(signal.SIGTERM)
    assert await asyncio.to_thread(sidecar.proc.wait, 20) == 0, sidecar.output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_workers_need_a_fixed_port() -> None:
    result = _cli("serve", "--workers", "2", env={"SIDECAR_PLUGINS_CHAIN": "via",
                                                  "SIDECAR_SERVER_PORT": "0",
                                                  "MISTRAL_API_KEY": "k"})
    assert result.returncode == 2
    assert "SIDECAR_SERVER_WORKERS" in result.stderr and "SIDECAR_SERVER_PORT" in result.stderr
