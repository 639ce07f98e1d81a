"""A change whose caller hangs up still ends once: what the database took is in the audit
log, and nothing is in the audit log that the database did not take."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from toxiproxy import Proxy, Toxiproxy

from tests.admin.admin_support import admin_env, audit_lines, call, create_key
from tests.conftest import PG_HOST, PG_PORT, SidecarFactory, wait_for
from tests.support.toxiproxy_fixture import listen_address

KEYS = "/admin/v1/keys"
#: When each caller hangs up after sending, in seconds: spread over a create that takes a
#: few slow database round trips, so some land while it writes and some after.
HANG_UPS = (0.15, 0.35, 0.6, 0.9, 1.2, 1.6, 2.0)


@pytest.fixture
def pg_proxy(toxiproxy_server: Toxiproxy) -> Proxy:
    """A fault proxy in front of PostgreSQL."""
    return toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="pg-admin",
                                   listen="127.0.0.1:0")


async def _post_and_hang_up(url: str, key: str, owner: str, after: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps({"owner": owner, "role": "user"}).encode()
    writer.write(f"POST {KEYS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    await writer.drain()
    await asyncio.sleep(after)
    writer.close()


async def test_a_key_created_for_a_caller_that_hung_up_is_audited(
        start_sidecar: SidecarFactory, pg_database: dict[str, str], pg_proxy: Proxy,
        tmp_path: Path) -> None:
    host, port = listen_address(pg_proxy)
    log = tmp_path / "sidecar.log"
    sidecar = await start_sidecar(**admin_env(
        {**pg_database, "DB_HOST": host, "DB_PORT": str(port)}, log,
        SIDECAR_AUTH_CACHE_TTL_SECONDS="600"))
    admin = await create_key({**sidecar.env, **pg_database}, "root", "admin", "acme")
    assert (await call(sidecar.url, "GET", KEYS, admin.key)).status == 200  # key cached
    pg_proxy.add_toxic(name="slow", type="latency", attributes={"latency": 150})
    try:
        await asyncio.gather(*(_post_and_hang_up(sidecar.url, admin.key, f"gone-{n}", after)
                               for n, after in enumerate(HANG_UPS)))
        await asyncio.sleep(3)
    finally:
        pg_proxy.destroy_toxic("slow")

    async def settled() -> list[str]:
        listed = await call(sidecar.url, "GET", KEYS, admin.key, params={"limit": "100"})
        return [item["owner"] for item in listed.body["data"] if item["owner"] != "root"]

    created = sorted(await wait_for(settled) or [])
    audited = sorted(line["detail"]["owner"] for line in audit_lines(log)
                     if line["action"] == "key.create")
    assert created, "no create reached the database: the hang-ups came too early to test"
    assert audited == created
