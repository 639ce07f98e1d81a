"""Upload memory use, temporary directory cleanup and the command-line configuration."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.mock_upstream import MockConfig, add_arguments, config_from_args, create_mock_app
from proxy.mock_upstream.state import STATE_KEY

from .conftest import AUTH
from .helpers import eventually

UPLOAD_MB = 48
REPO = Path(__file__).resolve().parents[2]


async def _zeros(megabytes: int) -> AsyncIterator[bytes]:
    block = b"\0" * (1024 * 1024)
    for _ in range(megabytes):
        yield block


async def test_large_upload_is_streamed_to_disk_not_memory(base_url: str) -> None:
    writer = aiohttp.MultipartWriter("form-data")
    writer.append(b"batch").set_content_disposition("form-data", name="purpose")
    part = writer.append(_zeros(UPLOAD_MB), {"Content-Type": "application/octet-stream"})
    part.set_content_disposition("form-data", name="file", filename="big.bin")

    tracemalloc.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url}/v1/files", data=writer, headers=AUTH) as response,
        ):
            uploaded = await response.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status == 200, uploaded
    assert uploaded["bytes"] == UPLOAD_MB * 1024 * 1024
    assert uploaded["purpose"] == "batch"
    # Client and server share this process; neither may hold the upload in memory.
    assert peak < 12 * 1024 * 1024


async def test_upload_directory_is_removed_on_cleanup() -> None:
    app = create_mock_app()
    server = TestServer(app)
    await server.start_server()
    form = aiohttp.FormData()
    form.add_field("file", b"line\n", filename="a.jsonl")
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/v1/files"), data=form, headers=AUTH) as response,
    ):
        assert response.status == 200
    upload_dir = app[STATE_KEY].upload_dir
    assert upload_dir is not None and any(upload_dir.iterdir())

    await server.close()
    assert not upload_dir.exists()


def test_command_line_arguments_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    defaults = parser.parse_args([])
    assert (defaults.host, defaults.port) == ("127.0.0.1", 8081)
    assert config_from_args(defaults) == MockConfig()

    ns = parser.parse_args(
        [
            "--port",
            "9000",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--latency-ms",
            "5",
            "--token-interval-ms",
            "2.5",
            "--stream-tokens",
            "4",
        ]
    )
    assert ns.port == 9000
    assert config_from_args(ns) == MockConfig(
        api_keys=frozenset({"a", "b"}), latency_ms=5.0, token_interval_ms=2.5, stream_tokens=4
    )
    assert config_from_args(parser.parse_args(["--api-key", ""])).api_keys == frozenset()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_run_mock_serves_until_interrupted() -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    code = (
        "from proxy.mock_upstream import MockConfig, run_mock; "
        f"run_mock('127.0.0.1', {port}, MockConfig(api_keys=frozenset({{'k'}})))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mock did not start"
                time.sleep(0.05)
        assert _get(f"{base}/v1/models", {"Authorization": "Bearer k"})[0] == 200
        assert _get(f"{base}/v1/models")[0] == 401

        # A caller that gives up on a stalled request is seen as cancelled by the mock.
        fault = urllib.request.Request(
            f"{base}/__mock__/faults", data=b'{"action": "stall"}', method="POST"
        )
        urllib.request.urlopen(fault, timeout=5).close()
        with pytest.raises(TimeoutError):
            _get(f"{base}/v1/models", {"Authorization": "Bearer k"}, timeout=0.3)
        deadline = time.monotonic() + 3
        while not _get(f"{base}/__mock__/requests")[1][-1]["cancelled"]:
            assert time.monotonic() < deadline, "cancellation never logged"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=10)[1]
    assert proc.returncode == 0, stderr.decode()


async def test_abandoned_upload_leaves_no_file(mock_server: TestServer) -> None:
    host, port = mock_server.host, mock_server.port
    reader, writer = await asyncio.open_connection(host, port)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    writer.write(
        b"POST /v1/files HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer mock-upstream-key\r\n"
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
        + b"Content-Length: 10000000\r\n\r\n"
        + head
        + b"x" * 100_000
    )
    await writer.drain()
    state = mock_server.app[STATE_KEY]  # type: ignore[index]

    async def receiving() -> bool:  # the part's file exists once the mock starts writing
        return state.upload_dir is not None and any(state.upload_dir.iterdir())

    await eventually(receiving)
    writer.close()
    await writer.wait_closed()
    del reader

    async def cancelled() -> bool:
        return bool(state.requests) and state.requests[0].cancelled

    await eventually(cancelled)
    assert state.files == {}
    assert state.upload_dir is not None and list(state.upload_dir.iterdir()) == []
    assert 0 < state.requests[0].body_size < 10_000_000  # what arrived, not what was announced
