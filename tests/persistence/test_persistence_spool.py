"""The spool and the write-behind pipeline on their own, with real files and a real SQLite store:
slots shared by replicas, orphans adopted, torn lines skipped, memory bounded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plugins.persistence.config import Options
from plugins.persistence.pipeline import WriteBehind
from plugins.persistence.records import USAGE, Record, iso_from_unix
from plugins.persistence.spool import Spool
from plugins.store.db import SqliteDatabase
from plugins.store.migrations import migrate


def usage_record(index: int) -> Record:
    """A minimal usage_log record."""
    now = time.time()
    return Record(USAGE, {"id": f"u{index}", "request_id": f"r{index}", "owner_id": "o",
                          "operation": "chat.complete", "status": 200,
                          "created_at": iso_from_unix(now)}, now)


def spool_with(root: Path, *indexes: int) -> Spool:
    """An opened spool holding one segment with the given usage records."""
    spool = Spool(root)
    spool.open()
    segment = spool.new_segment()
    Spool.append(segment, b"".join(usage_record(i).to_line() for i in indexes))
    Spool.seal(segment)
    return spool


def ids_in(spool: Spool, segments: list) -> list[str]:  # type: ignore[type-arg]
    """Record ids of segments, in order."""
    return [r.data["id"] for s in segments for r in spool.iter_records(s.path)]


def test_replicas_share_a_data_dir_and_orphans_are_adopted_in_order(tmp_path: Path) -> None:
    first = spool_with(tmp_path, 1, 2)
    second = spool_with(tmp_path, 3)
    assert first.directory != second.directory
    # Both die without their records reaching the database.
    first.close()
    second.close()

    heir = Spool(tmp_path)
    leftovers = heir.open()
    assert [s.count for s in leftovers] == [2, 1]
    assert ids_in(heir, leftovers) == ["u1", "u2", "u3"]
    # A replica starting while the heir lives gets its own, empty slot.
    other = Spool(tmp_path)
    assert other.open() == [] and other.directory != heir.directory
    heir.close()
    other.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, 1, 2)
    path = next(spool.directory.glob("*.jsonl"))
    with path.open("ab") as handle:
        handle.write(usage_record(3).to_line()[:25])
    spool.close()
    again = Spool(tmp_path)
    leftovers = again.open()
    assert [s.count for s in leftovers] == [2]
    assert ids_in(again, leftovers) == ["u1", "u2"]
    again.close()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    """A migrated embedded store."""
    db = SqliteDatabase(tmp_path / "sidecar.db")
    await db.open()
    await migrate(db)
    yield db
    await db.close()


async def test_memory_is_bounded_and_evicted_records_come_back_from_disk(
    tmp_path: Path, sqlite_db: SqliteDatabase
) -> None:
    options = Options(spool_dir=tmp_path / "spool", rejected_path=tmp_path / "rejected.jsonl",
                      flush_interval=3600, batch_size=4, max_memory_records=5,
                      segment_bytes=1024)
    seen: list[tuple[str, dict[str, object]]] = []
    pipeline = WriteBehind(sqlite_db, Spool(options.spool_dir), options,
                           lambda name, **fields: seen.append((name, fields)))
    await pipeline.start()
    for index in range(40):
        pipeline.enqueue([usage_record(index)])
        assert pipeline.memory <= options.max_memory_records + 1
    assert pipeline.depth == 40 and pipeline.spool_bytes > 1024
    assert any(name == "persistence.spooled" for name, _ in seen)

    assert await pipeline.flush()
    rows = await sqlite_db.fetchall("SELECT id FROM usage_log ORDER BY created_at, id")
    assert sorted(r["id"] for r in rows) == sorted(f"u{i}" for i in range(40))
    assert pipeline.depth == 0 and pipeline.memory == 0 and pipeline.spool_bytes == 0
    assert all(p.stat().st_size == 0 for p in options.spool_dir.rglob("*.jsonl"))
    await pipeline.stop()


async def test_a_record_the_database_refuses_is_set_aside_not_blocking_the_rest(
    tmp_path: Path, sqlite_db: SqliteDatabase
) -> None:
    options = Options(spool_dir=tmp_path / "spool", rejected_path=tmp_path / "rejected.jsonl",
                      flush_interval=3600)
    seen: list[str] = []
    pipeline = WriteBehind(sqlite_db, Spool(options.spool_dir), options,
                           lambda name, **fields: seen.append(name))
    await pipeline.start()
    bad = usage_record(2)
    bad.data["owner_id"] = None  # a NOT NULL column: no amount of retrying will store it
    pipeline.enqueue([usage_record(1), bad, usage_record(3)])
    assert await pipeline.flush()
    rows = await sqlite_db.fetchall("SELECT id FROM usage_log ORDER BY id")
    assert [r["id"] for r in rows] == ["u1", "u3"]
    assert "persistence.write_failed" in seen and pipeline.rejected_total == 1
    assert '"id":"u2"' in options.rejected_path.read_text()
    await pipeline.stop()
