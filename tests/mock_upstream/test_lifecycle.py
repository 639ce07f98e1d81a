"""Upload memory use, temporary directory cleanup and the command-line configuration."""

from __future__ import annotations

import argparse
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.test_utils import TestServer

from proxy.mock_upstream import MockConfig, add_arguments, config_from_args, create_mock_app
from proxy.mock_upstream.state import STATE_KEY

from .conftest import AUTH

UPLOAD_MB = 48


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
