"""PostgreSQL unreachable at start-up: the store starts without it only when a plugin after it
can serve without it (auth, from its key snapshot), opens it once it answers, and never uses
a schema that is behind; alone, it refuses to start as it always did."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from toxiproxy import Toxiproxy

from tests.auth.auth_support import auth_env, call, create_key, run_cli
from tests.conftest import (
    PG_HOST,
    PG_PORT,
    REPO,
    SidecarFactory,
    free_port,
    fresh_pg_database,
    wait_for,
)
from tests.support.toxiproxy_fixture import listen_address


@pytest.mark.parametrize("plugins", ["store", "store,persistence"])
def test_without_a_plugin_that_serves_without_it_the_store_refuses_to_start(
    plugins: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_"))}
    env.update({"SIDECAR_PLUGINS_CHAIN": plugins, "SIDECAR_SERVER_DATA_DIR": str(tmp_path),
                "MISTRAL_API_KEY": "k", "SIDECAR_SERVER_PORT": str(free_port()),
                "DB_HOST": "127.0.0.1", "DB_PORT": str(free_port()), "DB_USER": "postgres",
                "SIDECAR_DB_STARTUP_WAIT_SECONDS": "0.5"})
    result = subprocess.run([sys.executable, "-m", "proxy.cli", "serve"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mistral-sidecar: cannot start: PostgreSQL not reachable"), last
    assert "Traceback" not in result.stderr


async def test_a_schema_known_to_be_behind_stops_the_start(
    start_sidecar: SidecarFactory, pg_database: dict[str, str]
) -> None:
    with pytest.raises(RuntimeError, match=r"database needs \d+ migration"):
        await start_sidecar(**auth_env(pg_database, SIDECAR_DB_MIGRATE_ON_START="false"))


@pytest.fixture
def empty_database() -> Iterator[dict[str, str]]:
    """A second fresh PostgreSQL database, never migrated."""
    with fresh_pg_database() as env:
        yield env


async def _database_check(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
        report: dict[str, Any] = (await resp.json())["checks"]["database"]
        return report


async def test_a_database_found_behind_after_a_deferred_start_is_not_used_until_migrated(
    start_sidecar: SidecarFactory, pg_database: dict[str, str],
    empty_database: dict[str, str], toxiproxy_server: Toxiproxy, tmp_path: Path,
) -> None:
    data_dir = str(tmp_path / "shared")
    first = await start_sidecar(**auth_env(pg_database, SIDECAR_SERVER_DATA_DIR=data_dir))
    key = await create_key(first.env, "alice", "user")
    await wait_for(lambda: (Path(data_dir) / "auth" / "keys.json").exists())
    await asyncio.sleep(2.5)  # the background refresh writes alice's key to the snapshot

    proxy = toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="pg-behind",
                                    listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    proxy.disable()
    replica = await start_sidecar(**auth_env(
        {**empty_database, "DB_HOST": host, "DB_PORT": str(port)},
        SIDECAR_SERVER_DATA_DIR=data_dir, SIDECAR_DB_MIGRATE_ON_START="false",
        SIDECAR_DB_TIMEOUT_SECONDS="0.5"))
    report = await _database_check(replica.url)
    assert report["ok"] and report["reachable"] is False
    assert report["problem"].startswith("PostgreSQL not reachable")
    assert (await call(replica.url, "GET", "/v1/models", key.key)).status == 200

    proxy.enable()

    async def behind() -> dict[str, Any] | None:
        found = await _database_check(replica.url)
        return found if "migration" in found.get("problem", "") else None

    report = await wait_for(behind, timeout=10, interval=0.1)
    # Reached, but not used: unready (a deployment mistake, not an outage), keys from memory.
    assert report["ok"] is False and report["reachable"] is True
    assert (await call(replica.url, "GET", "/readyz")).status == 503
    assert (await call(replica.url, "GET", "/v1/models", key.key)).status == 200

    migrated = await run_cli({**first.env, **empty_database}, "migrate")
    assert migrated.code == 0, migrated.err

    async def opened() -> bool:
        found = await _database_check(replica.url)
        return bool(found["ok"] and found["reachable"] and "problem" not in found)

    await wait_for(opened, timeout=10, interval=0.1)
