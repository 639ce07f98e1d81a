"""Two sidecars on one PostgreSQL database: revocation propagates; outages degrade gracefully."""

from __future__ import annotations

import asyncio
from typing import Any

from auth_support import auth_env, call, create_key, is_mistral_error, run_cli
from toxiproxy import Toxiproxy

from tests.conftest import SidecarFactory, wait_for
from tests.support.toxiproxy_fixture import listen_address


async def test_revocation_reaches_every_replica_within_five_seconds(
    start_sidecar: SidecarFactory, pg_database: dict[str, str]
) -> None:
    # Default cache TTL: this is the promise users get.
    first = await start_sidecar(**auth_env(pg_database))
    second = await start_sidecar(**auth_env(pg_database))
    key = await create_key(first.env, "alice", "user")
    for sidecar in (first, second):
        assert (await call(sidecar.url, "GET", "/v1/models", key.key)).status == 200

    assert (await run_cli(first.env, "keys", "revoke", key.key_id)).code == 0

    async def refused_everywhere() -> bool:
        statuses = [(await call(s.url, "GET", "/v1/models", key.key)).status
                    for s in (first, second)]
        return statuses == [401, 401]

    await wait_for(refused_everywhere, timeout=5, interval=0.1)


async def test_database_outage_keeps_known_keys_working(
    start_sidecar: SidecarFactory, pg_database: dict[str, str], toxiproxy_server: Toxiproxy
) -> None:
    proxy = toxiproxy_server.create(upstream="127.0.0.1:5432", name="postgres",
                                    listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    # TTL 0: every request asks the database, so the outage path is taken without waiting.
    env = auth_env({**pg_database, "DB_HOST": host, "DB_PORT": str(port)},
                   SIDECAR_AUTH_CACHE_TTL_SECONDS="0", SIDECAR_AUTH_DB_TIMEOUT_SECONDS="0.5")
    sidecar = await start_sidecar(**env)
    known = await create_key(sidecar.env, "alice", "user")
    unseen = await create_key(sidecar.env, "bob", "user")
    assert (await call(sidecar.url, "GET", "/v1/models", known.key)).status == 200
    await asyncio.sleep(0.5)  # the background refresh (every 0.1 s with TTL 0) reads bob's key
    # Another replica, still reaching the database, creates a key during the outage.
    direct = auth_env(pg_database)

    with proxy.down():
        for _ in range(3):
            reply = await call(sidecar.url, "GET", "/v1/models", known.key)
            assert reply.status == 200, reply.text
        # Existed before the outage, never used here: served from the key table.
        reply = await call(sidecar.url, "GET", "/v1/models", unseen.key)
        assert reply.status == 200, reply.text
        late = await create_key({**sidecar.env, **direct}, "carol", "user")
        refused: Any = await call(sidecar.url, "GET", "/v1/models", late.key)
        assert refused.status == 503, refused.text
        assert is_mistral_error(refused.body) and late.key not in refused.text
        assert refused.headers.get("Retry-After")
        garbage = await call(sidecar.url, "GET", "/v1/models", "not-a-key")
        assert garbage.status == 401
        ready = await call(sidecar.url, "GET", "/readyz")
        assert ready.body["checks"]["auth"]["store"].startswith("unreachable")

    async def late_accepted() -> bool:
        return (await call(sidecar.url, "GET", "/v1/models", late.key)).status == 200

    await wait_for(late_accepted, timeout=10, interval=0.1)
