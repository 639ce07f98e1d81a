"""Keys across replicas: revocations, rotations and new keys reach every replica within seconds;
a replica that starts while PostgreSQL is down serves the keys that existed before, from the
snapshot on disk, and refuses to start, with one line, when it has none."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from auth_support import Key, auth_env, call, create_key, run_cli, start_conversation
from toxiproxy import Toxiproxy

from tests.conftest import (
    PG_HOST,
    PG_PORT,
    REPO,
    MockProcess,
    SidecarFactory,
    SidecarProcess,
    free_port,
    wait_for,
)
from tests.persistence.persistence_helpers import StoreReader
from tests.support.toxiproxy_fixture import listen_address

SNAPSHOT = Path("auth") / "keys.json"


async def _status(url: str, key: Key) -> int:
    return (await call(url, "GET", "/v1/models", key.key)).status


async def test_revocations_rotations_and_new_keys_reach_another_replica(
    start_sidecar: SidecarFactory, pg_database: dict[str, str]
) -> None:
    # Default refresh period: the promise users get.
    first = await start_sidecar(**auth_env(pg_database))
    second = await start_sidecar(**auth_env(pg_database))
    revoked = await create_key(first.env, "alice", "user")
    rotated = await create_key(first.env, "bob", "user")
    for sidecar in (first, second):
        for key in (revoked, rotated):
            assert await _status(sidecar.url, key) == 200

    # A key created a moment ago works everywhere at once.
    new = await create_key(first.env, "carol", "user")
    replies = [await call(s.url, "GET", "/v1/models", new.key) for s in (first, second)]
    assert [r.status for r in replies] == [200, 200], replies[0].text

    assert (await run_cli(first.env, "keys", "revoke", revoked.key_id)).code == 0
    result = await run_cli(first.env, "keys", "rotate", rotated.key_id)
    assert result.code == 0, result.err
    new_secret = Key(rotated.key_id, result.last_line, "bob", "user", "default")
    # The new secret works at once on both (the key is re-read when its secret differs) ...
    assert [await _status(s.url, new_secret) for s in (first, second)] == [200, 200]

    # ... and the revoked key and the old secret stop working within a few seconds.
    async def refused_everywhere() -> bool:
        return [await _status(s.url, k) for s in (first, second)
                for k in (revoked, rotated)] == [401] * 4

    await wait_for(refused_everywhere, timeout=5, interval=0.1)


def _proxied(pg_database: dict[str, str], host: str, port: int, **extra: str
             ) -> dict[str, str]:
    return auth_env({**pg_database, "DB_HOST": host, "DB_PORT": str(port)}, **extra)


async def test_replica_started_during_an_outage_serves_keys_from_its_snapshot(
    spawn_sidecar: Callable[..., SidecarProcess], spawn_mock: Callable[..., MockProcess],
    pg_database: dict[str, str], base_env: dict[str, str], toxiproxy_server: Toxiproxy,
) -> None:
    mock = spawn_mock()
    proxy = toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="pg-snapshot",
                                    listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    direct = {**base_env, **auth_env(pg_database)}
    keys = [await create_key(direct, f"user{i}", "user", "acme") for i in range(4)]
    revoked = await create_key(direct, "mallory", "user", "acme")
    assert (await run_cli(direct, "keys", "revoke", revoked.key_id)).code == 0
    env = _proxied(pg_database, host, port, MISTRAL_BASE_URL=mock.url,
                   SIDECAR_AUTH_DB_TIMEOUT_SECONDS="0.5")

    first = await asyncio.to_thread(spawn_sidecar, **env)
    assert await _status(first.url, keys[0]) == 200
    snapshot = Path(base_env["SIDECAR_SERVER_DATA_DIR"]) / SNAPSHOT
    _assert_protected(snapshot, [*keys, revoked])

    proxy.disable()
    try:
        replica = await asyncio.to_thread(spawn_sidecar, **env)
        ready = (await call(replica.url, "GET", "/readyz")).body["checks"]
        assert ready["auth"]["key_source"] == "snapshot" and ready["auth"]["keys"] == 5
        assert ready["database"]["reachable"] is False
        # Every key that existed before the outage, none of them ever used by this process.
        assert [await _status(replica.url, k) for k in keys] == [200] * 4
        assert await _status(replica.url, revoked) == 401
        conversation = await start_conversation(replica.url, keys[1].key)
        # A key made during the outage cannot be verified here yet: refused at once.
        late = await create_key(direct, "late", "user", "acme")
        reply = await call(replica.url, "GET", "/v1/models", late.key)
        assert reply.status == 503 and reply.headers["Retry-After"]
    finally:
        proxy.enable()

    async def late_accepted() -> bool:
        return await _status(replica.url, late) == 200

    await wait_for(late_accepted, timeout=15, interval=0.2)
    ready = (await call(replica.url, "GET", "/readyz")).body["checks"]
    assert ready["auth"]["key_source"] == "database" and ready["database"]["reachable"]
    # What the replica recorded during the outage reached the database.
    owners = await wait_for(lambda: _owner(pg_database, conversation), timeout=15)
    assert owners == ("acme", "user1")


def _owner(pg_database: dict[str, str], conversation: str) -> tuple[str, str] | None:
    rows = StoreReader(pg_database).rows(
        "SELECT org, owner FROM auth_ownership WHERE resource_id = ?", (conversation,))
    return (rows[0]["org"], rows[0]["owner"]) if rows else None


def _assert_protected(snapshot: Path, keys: list[Key]) -> None:
    """Mode 0600 in a 0700 directory; key ids and hashes, never a secret."""
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
    assert stat.S_IMODE(snapshot.parent.stat().st_mode) == 0o700
    text = snapshot.read_text()
    stored = {k["key_id"]: k for k in json.loads(text)["keys"]}
    assert set(stored) == {k.key_id for k in keys}
    for key in keys:
        secret = key.key.split("-", 3)[3]
        assert secret not in text and key.key not in text
        assert stored[key.key_id]["secret_hash"].startswith("sha256:")


def _serve(env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_"))}
    clean.update(env)
    clean.update({"SIDECAR_SERVER_DATA_DIR": str(data_dir), "MISTRAL_API_KEY": "k",
                  "SIDECAR_SERVER_PORT": str(free_port()), "SIDECAR_DB_STARTUP_WAIT_SECONDS": "1"})
    return subprocess.run([sys.executable, "-m", "proxy.cli", "serve"], env=clean, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _assert_refused(result: subprocess.CompletedProcess[str], *why: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mistral-sidecar: cannot start: PostgreSQL not reachable"), last
    for part in why:
        assert part in last, last
    assert "Traceback" not in result.stderr


async def test_replica_without_a_usable_snapshot_refuses_to_start_with_one_line(
    start_sidecar: SidecarFactory, pg_database: dict[str, str], tmp_path: Path,
    base_env: dict[str, str],
) -> None:
    down = {**pg_database, "DB_HOST": "127.0.0.1", "DB_PORT": str(free_port())}
    empty = tmp_path / "empty"
    result = await asyncio.to_thread(_serve, auth_env(down), empty)
    _assert_refused(result, "no key snapshot at", str(empty / SNAPSHOT))

    # A snapshot older than auth.stale_ttl_seconds is no better.
    written = tmp_path / "written"
    await create_key({**base_env, **auth_env(pg_database)}, "alice", "user")
    await start_sidecar(**auth_env(pg_database, SIDECAR_SERVER_DATA_DIR=str(written)))
    assert (written / SNAPSHOT).exists()
    await asyncio.sleep(1.1)
    result = await asyncio.to_thread(
        _serve, auth_env(down, SIDECAR_AUTH_STALE_TTL_SECONDS="1"), written)
    _assert_refused(result, "older than auth.stale_ttl_seconds")

    # With it, the same start succeeds, serving from the snapshot (checked above); turned
    # off, it is not read.
    result = await asyncio.to_thread(
        _serve, auth_env(down, SIDECAR_AUTH_KEY_SNAPSHOT="false"), written)
    _assert_refused(result, "SIDECAR_AUTH_KEY_SNAPSHOT=false")

