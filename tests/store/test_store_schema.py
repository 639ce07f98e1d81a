"""One schema in two dialects: the PostgreSQL and SQLite migrations build the same tables with
the same columns in the same order, and SQL is written once with ``?`` placeholders."""

from __future__ import annotations

from pathlib import Path

from plugins.store import open_database
from plugins.store.db import Database
from plugins.store.migrations import migrate
from proxy.loader import load


async def _open(env: dict[str, str], tmp_path: Path) -> Database:
    settings, _chain = load(None, {"SIDECAR_PLUGINS_CHAIN": "store",
                                   "SIDECAR_SERVER_DATA_DIR": str(tmp_path), **env})
    return await open_database(settings)


async def _columns(db: Database) -> dict[str, list[str]]:
    """Every table's columns, in order."""
    if db.dialect == "postgres":
        rows = await db.fetchall(
            "SELECT table_name AS t, column_name AS c FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")
    else:
        rows = await db.fetchall(
            "SELECT m.name AS t, p.name AS c FROM sqlite_master AS m, "
            "pragma_table_info(m.name) AS p WHERE m.type = 'table' "
            "AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid")
    tables: dict[str, list[str]] = {}
    for row in rows:
        tables.setdefault(str(row["t"]), []).append(str(row["c"]))
    return tables


async def test_both_dialects_build_the_same_tables_column_for_column(
    pg_database: dict[str, str], tmp_path: Path
) -> None:
    built = {}
    for name, env in (("sqlite", {}), ("postgres", pg_database)):
        db = await _open(env, tmp_path / name)
        try:
            await migrate(db)
            built[name] = await _columns(db)
        finally:
            await db.close()
    assert built["sqlite"] == built["postgres"]
    assert "conversation_entries" in built["sqlite"]


async def test_a_question_mark_inside_a_literal_is_text(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    db = await _open(store_env, tmp_path)
    try:
        row = await db.fetchone(
            "SELECT '?' AS mark, 'it''s 100% ?' AS text, ? AS given", ("value",))
        assert row == {"mark": "?", "text": "it's 100% ?", "given": "value"}
    finally:
        await db.close()
