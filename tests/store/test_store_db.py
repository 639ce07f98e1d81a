"""The shared store: one interface over SQLite and PostgreSQL, and its migrations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugins.store import open_database
from plugins.store.db import Database
from plugins.store.migrations import available, migrate, pending
from proxy.loader import load
from tests.conftest import REPO


async def _open(env: dict[str, str], tmp_path: Path) -> Database:
    settings, _chain = load(None, {"SIDECAR_PLUGINS_CHAIN": "store",
                                   "SIDECAR_SERVER_DATA_DIR": str(tmp_path), **env})
    return await open_database(settings)


async def test_same_sql_on_both_backends(store_env: dict[str, str], tmp_path: Path) -> None:
    db = await _open(store_env, tmp_path)
    try:
        await db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, note TEXT, n INTEGER)")
        assert await db.execute("INSERT INTO t VALUES (?, ?, ?)", ("a", "100% sure?", 1)) == 1
        assert await db.execute(
            "INSERT INTO t VALUES (?, ?, ?) ON CONFLICT DO NOTHING", ("a", "dup", 2)) == 0
        await db.executemany("INSERT INTO t VALUES (?, ?, ?)", [("b", "x", 2), ("c", "y", 3)])
        rows = await db.fetchall("SELECT id, note, n FROM t WHERE note LIKE '%' ORDER BY id")
        assert rows == [{"id": "a", "note": "100% sure?", "n": 1},
                        {"id": "b", "note": "x", "n": 2}, {"id": "c", "note": "y", "n": 3}]
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("DELETE FROM t")
                raise RuntimeError("roll back")
        assert (await db.fetchone("SELECT COUNT(*) AS n FROM t")) == {"n": 3}
        assert await db.ping()
    finally:
        await db.close()


async def test_migrations_apply_once_and_in_order(store_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    db = await _open(store_env, tmp_path)
    try:
        shipped = available(db.dialect)
        assert [m.version for m in shipped] == sorted(m.version for m in shipped)
        assert [m.version for m in await migrate(db)] == [m.version for m in shipped]
        assert await pending(db) == [] and await migrate(db) == []
    finally:
        await db.close()


def test_both_dialects_ship_the_same_migrations() -> None:
    assert [(m.version, m.name) for m in available("postgres")] == [
        (m.version, m.name) for m in available("sqlite")]


async def test_concurrent_migrations_on_postgres_do_not_race(pg_database: dict[str, str],
                                                            tmp_path: Path) -> None:
    first, second = await _open(pg_database, tmp_path), await _open(pg_database, tmp_path)
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(len(a) for a in applied) == [0, len(available("postgres"))]
    finally:
        await first.close()
        await second.close()


def test_serve_refuses_an_unmigrated_database_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_"))}
    env.update({"SIDECAR_PLUGINS_CHAIN": "store", "SIDECAR_SERVER_DATA_DIR": str(tmp_path),
                "MISTRAL_API_KEY": "k", "SIDECAR_SERVER_PORT": "0"})
    result = subprocess.run([sys.executable, "-m", "proxy.cli", "serve"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mistral-sidecar: cannot start: database needs")
    assert "Traceback" not in result.stderr
    migrated = subprocess.run([sys.executable, "-m", "proxy.cli", "migrate"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0 and "up to date" in migrated.stdout


async def test_readyz_reports_an_unreachable_database_but_stays_ready(
    start_sidecar: Any, pg_database: dict[str, str], toxiproxy_server: Any
) -> None:
    import aiohttp

    from tests.support.toxiproxy_fixture import listen_address

    proxy = toxiproxy_server.create(upstream="127.0.0.1:5432", name="pg", listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="store", SIDECAR_DB_MIGRATE_ON_START="true",
                                  SIDECAR_DB_TIMEOUT_SECONDS="0.5",
                                  **{**pg_database, "DB_HOST": host, "DB_PORT": str(port)})

    async def readyz() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/readyz") as resp:
            return resp.status, (await resp.json())["checks"]["database"]

    assert await readyz() == (200, {"ok": True, "reachable": True, "backend": "postgres"})
    with proxy.down():
        status, report = await readyz()
        assert status == 200 and report["reachable"] is False
