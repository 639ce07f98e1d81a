"""The sidecar as a process: start-up errors, SIGTERM drain, memory under a large upload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REPO, MockProcess, SidecarProcess, free_port

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], env=full_env,
                          capture_output=True, text=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SIDECAR_SERVER_PORT": "eighty"}, "SIDECAR_SERVER_PORT"),
        ({"MISTRAL_BASE_URL": "ftp://example"}, "MISTRAL_BASE_URL"),
        ({"SIDECAR_PLUGINS_CHAIN": "via,no_such_plugin"}, "no_such_plugin"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"SIDECAR_SERVER_SHUTDOWN_GRACE_SECONDS": "-1"}, "SIDECAR_SERVER_SHUTDOWN_GRACE_SECONDS"),
    ],
)
def test_bad_config_stops_start_up_with_one_clear_line(env: dict[str, str], names: str) -> None:
    result = _cli("serve", env={"SIDECAR_PLUGINS_CHAIN": "via", **env})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mistral-sidecar: configuration error:")
    assert names in lines[0]
    checked = _cli("check-config", env={"SIDECAR_PLUGINS_CHAIN": "via", **env})
    assert checked.returncode == 2 and names in checked.stderr


def test_bad_yaml_file_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text("upstream:\n  base_url: https://api.mistral.ai\n  retries: 3\n")
    result = _cli("check-config", "--config", str(config),
                  env={"SIDECAR_PLUGINS_CHAIN": "via"})
    assert result.returncode == 2
    assert "upstream.retries" in result.stderr and "unknown setting" in result.stderr
    config.write_text("upstream:\n  base_url: http://127.0.0.1:9\n")
    assert _cli("check-config", "--config", str(config),
                env={"SIDECAR_PLUGINS_CHAIN": "via"}).returncode == 0


def test_plugins_command_lists_the_chain_in_order() -> None:
    result = _cli("plugins", env={"SIDECAR_PLUGINS_CHAIN": "via"})
    assert result.returncode == 0
    first = result.stdout.splitlines()[0]
    assert first.split()[:2] == ["1.", "via"] and "on_response" in first


def test_help_explains_each_command() -> None:
    for command in ("serve", "mock-upstream", "plugins", "check-config", "demo"):
        result = _cli(command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout


@pytest.fixture
async def streaming_pair(
    spawn_mock: Callable[..., MockProcess], spawn_sidecar: Callable[..., SidecarProcess]
) -> AsyncIterator[tuple[MockProcess, SidecarProcess]]:
    mock = spawn_mock("--token-interval-ms", "150", "--stream-tokens", "12")
    sidecar = spawn_sidecar(MISTRAL_BASE_URL=mock.url, SIDECAR_PLUGINS_CHAIN="via",
                            SIDECAR_SERVER_SHUTDOWN_GRACE_SECONDS="10")
    yield mock, sidecar


async def test_sigterm_drains_a_live_stream_then_exits_zero(
    streaming_pair: tuple[MockProcess, SidecarProcess]
) -> None:
    _mock, sidecar = streaming_pair
    async with aiohttp.ClientSession() as http:
        resp = await http.post(sidecar.url + "/v1/chat/completions",
                               json={**CHAT, "stream": True})
        assert resp.status == 200
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        sidecar.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # New connections are refused while the stream still drains.
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as other:
                await other.get(sidecar.url + "/healthz")
        rest = await resp.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert rest.count(b"data: ") >= 12
    returncode = await asyncio.to_thread(sidecar.proc.wait, 15)
    assert returncode == 0, sidecar.output()


async def test_large_upload_streams_with_flat_memory(
    spawn_mock: Callable[..., MockProcess], spawn_sidecar: Callable[..., SidecarProcess]
) -> None:
    mock = spawn_mock()
    sidecar = spawn_sidecar(MISTRAL_BASE_URL=mock.url, SIDECAR_PLUGINS_CHAIN="via",
                            SIDECAR_LIMITS_MAX_UPLOAD_BYTES=str(2 * 1024**3))
    total = 1024**3
    block = os.urandom(1024 * 1024)
    peak = 0
    baseline = sidecar.rss_kib()

    async def body() -> AsyncIterator[bytes]:
        nonlocal peak
        for index in range(total // len(block)):
            if index % 64 == 0:
                peak = max(peak, sidecar.rss_kib())
            yield block

    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(body(), {"Content-Type": "application/octet-stream"})
    part.set_content_disposition("form-data", name="file", filename="big.jsonl")
    writer.append("batch").set_content_disposition("form-data", name="purpose")
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/files", data=writer, headers={"Authorization": "Bearer x"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        uploaded = await resp.json()
    peak = max(peak, sidecar.rss_kib())
    assert uploaded.get("size_bytes", uploaded.get("bytes")) == total, uploaded
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 16, (
        f"sidecar RSS grew {growth_mib:.1f} MiB for a 1 GiB upload "
        f"({time.monotonic() - started:.1f} s)")

    # And back down: a 1 GiB download streams through the same way.
    peak = sidecar.rss_kib()
    received = 0
    async with aiohttp.ClientSession() as http, http.get(
        sidecar.url + f"/v1/files/{uploaded['id']}/content", headers={"Authorization": "Bearer x"}
    ) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(1024 * 1024):
            received += len(chunk)
            if received % (64 * 1024 * 1024) < len(chunk):
                peak = max(peak, sidecar.rss_kib())
    assert received == total
    assert (peak - baseline) / 1024 < 16


def test_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = _cli("serve", env={"SIDECAR_PLUGINS_CHAIN": "via",
                                    "SIDECAR_SERVER_PORT": str(port),
                                    "MISTRAL_API_KEY": "k"})
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    _ = free_port


async def test_demo_command_serves_the_sdk_without_any_setup(tmp_path: Path) -> None:
    from mistralai.client import Mistral

    port, mock_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_"))}
    env["SIDECAR_SERVER_DATA_DIR"] = str(tmp_path / "demo-data")
    log = tmp_path / "demo.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "demo", "--port", str(port), "--mock-port",
             str(mock_port)], env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        client = Mistral(api_key="any-key", server_url=url)
        answer = await client.chat.complete_async(
            model="mistral-small-latest", messages=[{"role": "user", "content": "hello demo"}])
        assert answer.choices[0].message.content == "Echo: hello demo"
        # The README's examples work offline, agents and conversations included.
        agent = await client.beta.agents.create_async(model="mistral-small-latest",
                                                       name="demo helper")
        started = await client.beta.conversations.start_async(agent_id=agent.id,
                                                              inputs="hello agent")
        assert started.conversation_id
        assert f"http://127.0.0.1:{port}" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0, log.read_text()
    # Every line the demo wrote, from its announcement to its last, is JSON.
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_a_closed_pipe_ends_the_listing_quietly() -> None:
    """``mistral-sidecar settings | head -1``, with a reader that is gone before the first
    write (so the outcome does not depend on the pipe's buffer)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_"))}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "proxy.cli", "settings"],
                                stdout=write_end, stderr=subprocess.PIPE, env=env, cwd=REPO,
                                text=True, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""
