"""Ownership is durable and race-free (finding 3 of issue #16): a caller who received a
complete answer for something it created owns it in the database, even if the sidecar is
killed a moment later or the database was unreachable at the time; a replica that does not
know a resource yet treats it as unknown, never as someone else's.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from tenancy_support import is_not_found
from toxiproxy import Toxiproxy

from tests.auth.auth_support import Key, auth_env, call, create_key, start_conversation
from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    MockProcess,
    SidecarFactory,
    SidecarProcess,
    wait_for,
)
from tests.support.toxiproxy_fixture import listen_address

MODEL = "mistral-small-latest"


def owners_in_database(pg: dict[str, str]) -> dict[str, tuple[str, str]]:
    """conversation id -> (org, owner), read straight from PostgreSQL."""
    conninfo = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={pg['DB_NAME']}"
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT resource_id, org, owner FROM auth_ownership "
                            "WHERE kind = 'conversation'").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@dataclass
class Outcome:
    """What the caller of one streamed conversation start saw."""

    creator: Key
    status: int | None = None
    conversation_id: str | None = None
    complete: bool = False


async def streamed_start(url: str, creator: Key, delay: float = 0.0) -> Outcome:
    """Start a streamed conversation; ``complete`` only if the whole stream arrived."""
    await asyncio.sleep(delay)
    outcome = Outcome(creator)
    body = {"model": MODEL, "inputs": "tell me a story", "stream": True}
    done = False
    try:
        async with aiohttp.ClientSession() as session, session.post(
            url + "/v1/conversations", json=body,
            headers={"Authorization": f"Bearer {creator.key}"},
        ) as resp:
            outcome.status = resp.status
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                data = json.loads(line[5:])
                if data.get("type") == "conversation.response.started":
                    outcome.conversation_id = data["conversation_id"]
                done = done or data.get("type") == "conversation.response.done"
        # Reaching the end without a payload error means the terminating chunk arrived.
        outcome.complete = resp.status == 200 and done
    except (aiohttp.ClientError, ConnectionError, ValueError):
        pass
    return outcome


async def test_every_complete_stream_is_owned_after_kill_9(
    spawn_sidecar: Callable[..., SidecarProcess], spawn_mock: Callable[..., MockProcess],
    pg_database: dict[str, str], base_env: dict[str, str], toxiproxy_server: Toxiproxy,
) -> None:
    mock = spawn_mock("--token-interval-ms", "40", "--stream-tokens", "8")
    env = auth_env(pg_database, MISTRAL_BASE_URL=mock.url)
    # A slow database: a record written after (or beside) the stream lands after its end.
    proxy = toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="pg-slow",
                                    listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    proxy.add_toxic(name="slow", type="latency", stream="downstream",
                    attributes={"latency": 150})
    sidecar = await asyncio.to_thread(spawn_sidecar, **{**env, "DB_HOST": host,
                                                        "DB_PORT": str(port)})
    cli_env = {**base_env, **env}
    creators = [await create_key(cli_env, f"user{i}", "user", f"org{i % 3}") for i in range(6)]

    rng = random.Random(16)
    starts = [asyncio.create_task(streamed_start(sidecar.url, creators[i % len(creators)],
                                                 rng.uniform(0.0, 2.0)))
              for i in range(40)]

    def finished() -> int:
        return sum(1 for t in starts if t.done() and t.result().complete)

    await wait_for(lambda: finished() >= 3, timeout=20, interval=0.01)
    # Right after a stream ended: a write still on its way dies with the process.
    sidecar.signal(signal.SIGKILL)
    outcomes = await asyncio.gather(*starts)
    await asyncio.to_thread(sidecar.proc.wait, 10)

    complete = [o for o in outcomes if o.complete]
    cut = [o for o in outcomes if o.status == 200 and not o.complete]
    assert complete, "no stream finished before the kill: the test proved nothing"
    assert cut, "no stream was in flight at the kill: the test proved nothing"
    owners = owners_in_database(pg_database)
    missing = [(o.conversation_id, o.creator.owner) for o in complete
               if owners.get(o.conversation_id or "") != (o.creator.org, o.creator.owner)]
    assert not missing, f"complete streams without their owner in the database: {missing}"
    log = sidecar.output()
    assert "UniqueViolation" not in log and "was never retrieved" not in log, log[-2000:]

    # A new replica serves them to their owners, and to nobody else.
    replica = await asyncio.to_thread(spawn_sidecar, **env)
    sample = complete[0]
    path = f"/v1/conversations/{sample.conversation_id}"
    assert (await call(replica.url, "GET", path, sample.creator.key)).status == 200
    stranger = next(c for c in creators if c.org != sample.creator.org)
    assert is_not_found(await call(replica.url, "GET", path, stranger.key))


def _spooled_lines(data_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted((data_dir / "spool" / "auth").glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


async def test_ownership_written_during_an_outage_is_spooled_and_replayed(
    start_sidecar: SidecarFactory, pg_database: dict[str, str], toxiproxy_server: Toxiproxy,
    tmp_path: Path,
) -> None:
    proxy = toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="pg-own",
                                    listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    first_dir, replica_dir = tmp_path / "first", tmp_path / "replica"
    first = await start_sidecar(**auth_env(
        {**pg_database, "DB_HOST": host, "DB_PORT": str(port)},
        SIDECAR_AUTH_DB_TIMEOUT_SECONDS="0.5", SIDECAR_SERVER_DATA_DIR=str(first_dir)))
    replica = await start_sidecar(**auth_env(pg_database, SIDECAR_SERVER_DATA_DIR=str(replica_dir)))
    alice = await create_key(replica.env, "alice", "user", "acme")
    globex = await create_key(replica.env, "gary", "admin", "globex")
    assert (await call(first.url, "GET", "/v1/models", alice.key)).status == 200

    with proxy.down():
        plain = await start_conversation(first.url, alice.key)
        streamed = await streamed_start(first.url, alice)
        assert streamed.complete and streamed.conversation_id
        made = [plain, streamed.conversation_id]
        # Known where it was made, durable on disk, not yet in the database.
        for conversation in made:
            path = f"/v1/conversations/{conversation}"
            assert (await call(first.url, "GET", path, alice.key)).status == 200
            # The other replica does not know it: unknown, for its creator as for others.
            for key in (alice, globex):
                assert is_not_found(await call(replica.url, "GET", path, key.key))
        assert {line["resource_id"] for line in _spooled_lines(first_dir)} == set(made)
        assert not set(made) & set(owners_in_database(pg_database))

    async def replayed() -> bool:
        return all([(await call(replica.url, "GET", f"/v1/conversations/{c}",
                                alice.key)).status == 200 for c in made])

    await wait_for(replayed, timeout=15, interval=0.2)
    owners = owners_in_database(pg_database)
    assert all(owners[c] == ("acme", "alice") for c in made)
    for conversation in made:
        assert is_not_found(await call(replica.url, "GET", f"/v1/conversations/{conversation}",
                                       globex.key))
    await wait_for(lambda: not _spooled_lines(first_dir), timeout=5)


async def test_spooled_ownership_is_replayed_at_the_next_start(
    spawn_sidecar: Callable[..., SidecarProcess], spawn_mock: Callable[..., MockProcess],
    pg_database: dict[str, str], base_env: dict[str, str], toxiproxy_server: Toxiproxy,
) -> None:
    mock = spawn_mock()
    proxy = toxiproxy_server.create(upstream=f"{PG_HOST}:{PG_PORT}", name="pg-restart",
                                    listen="127.0.0.1:0")
    host, port = listen_address(proxy)
    direct = auth_env(pg_database, MISTRAL_BASE_URL=mock.url)
    sidecar = await asyncio.to_thread(spawn_sidecar, **{
        **direct, "DB_HOST": host, "DB_PORT": str(port),
        "SIDECAR_AUTH_DB_TIMEOUT_SECONDS": "0.5"})
    cli_env = {**base_env, **direct}
    alice = await create_key(cli_env, "alice", "user", "acme")
    globex = await create_key(cli_env, "gary", "admin", "globex")
    assert (await call(sidecar.url, "GET", "/v1/models", alice.key)).status == 200

    with proxy.down():
        conversation = await start_conversation(sidecar.url, alice.key)
        sidecar.signal(signal.SIGKILL)
        await asyncio.to_thread(sidecar.proc.wait, 10)
    assert conversation not in owners_in_database(pg_database)
    assert _spooled_lines(Path(base_env["SIDECAR_SERVER_DATA_DIR"]))

    # The next process on the same data directory writes it before it serves anything.
    restarted = await asyncio.to_thread(spawn_sidecar, **direct)
    assert owners_in_database(pg_database)[conversation] == ("acme", "alice")
    path = f"/v1/conversations/{conversation}"
    assert (await call(restarted.url, "GET", path, alice.key)).status == 200
    assert is_not_found(await call(restarted.url, "GET", path, globex.key))
    assert not _spooled_lines(Path(base_env["SIDECAR_SERVER_DATA_DIR"]))


async def test_concurrent_creates_on_two_replicas_all_land(
    start_sidecar: SidecarFactory, pg_database: dict[str, str]
) -> None:
    first = await start_sidecar(**auth_env(pg_database))
    second = await start_sidecar(**auth_env(pg_database))
    alice = await create_key(first.env, "alice", "user", "acme")
    outcomes = await asyncio.gather(*(
        streamed_start(sidecar.url, alice) for sidecar in (first, second) for _ in range(8)))
    assert all(o.complete for o in outcomes)
    owners = owners_in_database(pg_database)
    for outcome in outcomes:
        assert owners[outcome.conversation_id or ""] == ("acme", "alice")
        for sidecar in (first, second):
            reply = await call(sidecar.url, "GET",
                               f"/v1/conversations/{outcome.conversation_id}", alice.key)
            assert reply.status == 200, reply.text
