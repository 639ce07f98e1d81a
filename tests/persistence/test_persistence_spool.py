"""The spool and the write-behind pipeline on their own, with real files and a real SQLite store:
slots shared by replicas, orphans adopted, torn lines skipped, memory bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from plugins.persistence.config import Options
from plugins.persistence.pipeline import WriteBehind
from plugins.persistence.records import USAGE, USAGE_COLUMNS, Record, iso_from_unix
from plugins.persistence.spool import Spool, filesystem_type
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


def tight_options(tmp_path: Path) -> Options:
    """Small batches, a memory bound of 5 records and 1 kB segments: eviction and sealing
    happen within a few dozen records."""
    return Options(spool_dir=tmp_path / "spool", rejected_path=tmp_path / "rejected.jsonl",
                   flush_interval=3600, batch_size=4, max_memory_records=5, segment_bytes=1024)


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
    options = tight_options(tmp_path)
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


def test_a_segment_its_process_never_sealed_is_read_to_its_last_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    segment = spool.new_segment()
    for index in range(3):
        Spool.append(segment, usage_record(index).to_line())
    # The process dies: its map goes away without the file being cut to what was written.
    assert segment.map is not None and segment.fd is not None
    segment.map.close()
    os.close(segment.fd)
    spool.close()
    assert segment.path is not None and segment.path.stat().st_size > segment.size

    heir = Spool(tmp_path)
    leftovers = heir.open()
    assert [s.count for s in leftovers] == [3]
    assert ids_in(heir, leftovers) == ["u0", "u1", "u2"]
    assert leftovers[0].size == segment.size == leftovers[0].path.stat().st_size
    heir.close()


_FULL_DISK = """
import asyncio, json, resource, signal, sys
from pathlib import Path
from plugins.persistence.config import Options
from plugins.persistence.pipeline import WriteBehind
from plugins.persistence.spool import Spool, filesystem_type
from plugins.store.db import SqliteDatabase
from tests.persistence.test_persistence_spool import usage_record

async def main(root: Path) -> None:
    options = Options(spool_dir=root / "spool", rejected_path=root / "rejected.jsonl",
                      flush_interval=3600)
    seen = []
    pipeline = WriteBehind(SqliteDatabase(root / "unused.db"), Spool(options.spool_dir),
                           options, lambda name, **fields: seen.append(fields.get("error")))
    await pipeline.start()
    # No file may grow past 100 kB from here on: the spool's map can hold less than that.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    for index in range(1000):
        pipeline.enqueue([usage_record(index)])
    spooled = sum(1 for path in options.spool_dir.rglob("*.jsonl")
                  for _ in Spool.iter_records(path))
    print(json.dumps({"depth": pipeline.depth, "spooled": spooled, "errors": seen}))

asyncio.run(main(Path(sys.argv[1])))
"""


def test_a_spool_that_cannot_grow_keeps_records_in_memory_and_says_so(tmp_path: Path) -> None:
    # The spool's file cannot grow (a file size limit here, a full disk in production): the
    # records written so far stay readable, the rest are kept in memory, the process lives on.
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["depth"] == 1000
    assert 0 < report["spooled"] < 1000
    assert report["errors"] and all("spool write failed" in error for error in report["errors"])


async def test_usage_lines_of_both_forms_give_the_same_rows(
    tmp_path: Path, sqlite_db: SqliteDatabase
) -> None:
    # Usage records are spooled as arrays; a spool left by an earlier version holds objects.
    now = time.time()
    values = {"request_id": "r", "owner_id": "o", "operation": "chat.complete",
              "model": "mistral-small-latest", "agent_id": None, "conversation_id": "c",
              "status": 200, "streamed": True, "prompt_tokens": 3, "completion_tokens": 4,
              "total_tokens": 7, "latency_ms": 12.5, "created_at": iso_from_unix(now),
              "content": {"request": {"messages": []}}, "key_id": "k", "org": "acme",
              "cost_nanos": 1500, "currency": "USD", "estimated": True}
    as_row = Record.usage_row(now, *({"id": "row", **values}[c] for c in USAGE_COLUMNS))
    as_object = Record(USAGE, {"id": "object", **values}, now)
    lines = [record.to_line() for record in (as_row, as_object)]
    assert lines[0].startswith(b'["usage",') and lines[1].startswith(b'{"kind":"usage"')
    replayed = [Record.from_line(line) for line in lines]
    assert [r.data for r in replayed] == [as_row.data, as_object.data]

    options = Options(spool_dir=tmp_path / "spool", rejected_path=tmp_path / "rejected.jsonl",
                      flush_interval=3600)
    pipeline = WriteBehind(sqlite_db, Spool(options.spool_dir), options,
                           lambda name, **fields: None)
    await pipeline.start()
    pipeline.enqueue(replayed)
    assert await pipeline.flush()
    await pipeline.stop()
    rows = {r["id"]: dict(r) for r in await sqlite_db.fetchall("SELECT * FROM usage_log")}
    assert rows["row"] == {**rows["object"], "id": "row"}
    assert (rows["row"]["streamed"], rows["row"]["latency_ms"], rows["row"]["total_tokens"],
            json.loads(rows["row"]["content"]), rows["row"]["estimated"]) == (
        1, 12.5, 7, values["content"], 1)


_MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /var/lib/sidecar rw,relatime shared:20 - btrfs /dev/sdb1 rw,space_cache
41 40 0:36 / /var/lib/sidecar/my\\040spool rw,relatime shared:21 - tmpfs tmpfs rw,size=1024k
"""


def test_the_filesystem_of_the_spool_is_told_from_mountinfo(tmp_path: Path) -> None:
    assert filesystem_type(Path("/var/lib/sidecar/data"), _MOUNTINFO) == "btrfs"
    assert filesystem_type(Path("/var/lib/sidecar/my spool/x"), _MOUNTINFO) == "tmpfs"
    assert filesystem_type(Path("/var/lib/sidecarish"), _MOUNTINFO) == "ext4"
    assert filesystem_type(tmp_path) is not None  # this machine's own mountinfo


async def test_on_a_copy_on_write_filesystem_the_spool_appends_with_write(
    tmp_path: Path, sqlite_db: SqliteDatabase
) -> None:
    # btrfs or ZFS: the same pipeline, its files written with write() and never padded.
    options = tight_options(tmp_path)
    pipeline = WriteBehind(sqlite_db, Spool(options.spool_dir, mapped=False), options,
                           lambda name, **fields: None)
    await pipeline.start()
    for index in range(40):
        pipeline.enqueue([usage_record(index)])
    files = list(options.spool_dir.rglob("*.jsonl"))
    assert sum(p.stat().st_size for p in files) == pipeline.spool_bytes
    assert all(b"\0" not in p.read_bytes() for p in files)

    assert await pipeline.flush()
    rows = await sqlite_db.fetchall("SELECT id FROM usage_log")
    assert sorted(r["id"] for r in rows) == sorted(f"u{i}" for i in range(40))
    assert all(p.stat().st_size == 0 for p in options.spool_dir.rglob("*.jsonl"))
    pipeline.enqueue([usage_record(40)])
    assert [r.data["id"] for p in options.spool_dir.rglob("*.jsonl")
            for r in Spool.iter_records(p)] == ["u40"]
    await pipeline.stop()


def test_a_usage_line_spooled_before_estimates_were_recorded_replays_as_reported() -> None:
    # The version before: the columns up to currency, no "estimated".
    line = orjson.dumps([USAGE, 1.0, "old", "r", "o", "chat.complete", "m", None, None, 200,
                         False, 1, 2, 3, 4.5, "1970-01-01T00:00:01.000000Z", None, "k",
                         "acme", 30, "USD"])
    record = Record.from_line(line)
    assert (record.data["cost_nanos"], record.data["estimated"]) == (30, False)
    # One column too many or too few is not a usage line of any version.
    for broken in ([*orjson.loads(line), False, "extra"], orjson.loads(line)[:-2]):
        with pytest.raises(ValueError):
            Record.from_line(orjson.dumps(broken))
