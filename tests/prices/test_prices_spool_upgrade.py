"""Upgrading: usage lines spooled by a version that recorded no key, organisation or cost
are still written, their cost unknown, and ``usage`` says so."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson

from plugins.persistence.config import Options
from plugins.persistence.pipeline import WriteBehind
from plugins.persistence.records import USAGE, Record, iso_from_unix
from plugins.persistence.spool import Spool
from plugins.store import open_database
from plugins.store.migrations import migrate
from proxy.loader import load
from tests.auth.auth_support import run_cli


async def test_a_usage_line_of_the_previous_version_replays_with_its_cost_unknown(
        store_env: dict[str, str], tmp_path: Path) -> None:
    env = {"SIDECAR_PLUGINS_CHAIN": "store,persistence", "SIDECAR_SERVER_DATA_DIR": str(tmp_path),
           **store_env}
    settings, _chain = load(None, env, serving=False)
    db = await open_database(settings)
    try:
        await migrate(db)
        now = time.time()
        # kind, time, then the 15 columns that version wrote.
        old = orjson.dumps([USAGE, now, "old-1", "r-1", "alice", "chat.complete",
                            "mistral-small-latest", None, None, 200, False, 5, 6, 11, 12.5,
                            iso_from_unix(now), None])
        record = Record.from_line(old)
        options = Options(spool_dir=tmp_path / "spool",
                          rejected_path=tmp_path / "rejected.jsonl", flush_interval=3600)
        pipeline = WriteBehind(db, Spool(options.spool_dir), options,
                               lambda name, **fields: None)
        await pipeline.start()
        pipeline.enqueue([record])
        assert await pipeline.flush()
        await pipeline.stop()
        row = await db.fetchone("SELECT owner_id, total_tokens, key_id, org, cost_nanos, "
                                "currency FROM usage_log WHERE id = 'old-1'")
    finally:
        await db.close()
    assert row is not None and dict(row) == {
        "owner_id": "alice", "total_tokens": 11, "key_id": None, "org": None,
        "cost_nanos": None, "currency": None}
    report = await run_cli(env, "usage", "--json")
    assert report.code == 0, report.err
    (line,) = json.loads(report.out)
    assert (line["cost"], line["currency"], line["unpriced"]) == (None, None, 1)
