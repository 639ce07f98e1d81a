"""Helpers for the persistence tests: reading the sidecar's database directly (with psycopg or
sqlite3, not through the sidecar's own code) and the environment that enables the plugin."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

PLUGINS = "store,persistence"
#: Columns holding JSON (usage_log.content; conversation_entries.content is text).
_JSON_COLUMNS = frozenset({"content_json", "metadata", "tools", "completion_args", "content"})
MODEL = "mistral-small-latest"


def persist_env(store_env: dict[str, str], **extra: str) -> dict[str, str]:
    """Environment for a sidecar recording into the store of ``store_env``."""
    env = {"SIDECAR_PLUGINS_CHAIN": PLUGINS, "SIDECAR_DB_MIGRATE_ON_START": "true",
           "SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS": "0.02", **store_env}
    env.update(extra)
    return env


class StoreReader:
    """Runs queries (``?`` placeholders) against the store a sidecar was given."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.postgres = bool(env.get("DB_HOST"))

    @property
    def sqlite_path(self) -> Path:
        """The embedded database file."""
        return Path(self.env["SIDECAR_SERVER_DATA_DIR"]) / "sidecar.db"

    def rows(self, sql: str, params: tuple[Any, ...] = (),
             json_columns: frozenset[str] = _JSON_COLUMNS) -> list[dict[str, Any]]:
        """All rows as dicts, ``json_columns`` parsed, timestamps as text."""
        if self.postgres:
            import psycopg

            with psycopg.connect(self._conninfo(), autocommit=True) as conn:
                cur = conn.execute(sql.replace("?", "%s"), params)
                names = [c.name for c in cur.description or ()]
                raw = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        else:
            if not self.sqlite_path.exists():
                return []
            with sqlite3.connect(self.sqlite_path) as conn:
                try:
                    cur = conn.execute(sql, params)
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        return []
                    raise
                names = [d[0] for d in cur.description or ()]
                raw = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return [_normalise(r, json_columns) for r in raw]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement (used to plant rows the sidecar did not write)."""
        if self.postgres:
            import psycopg

            with psycopg.connect(self._conninfo(), autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s"), params)
        else:
            with sqlite3.connect(self.sqlite_path) as conn:
                conn.execute(sql, params)

    def _conninfo(self) -> str:
        return (f"host={self.env['DB_HOST']} port={self.env.get('DB_PORT', '5432')} "
                f"dbname={self.env['DB_NAME']} user={self.env.get('DB_USER', 'postgres')}")

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """The single number a ``SELECT COUNT(*) AS n ...`` returns."""
        return int(self.rows(sql, params)[0]["n"])

    def entries(self, conversation_id: str) -> list[dict[str, Any]]:
        """A conversation's entries in order."""
        return self.rows("SELECT * FROM conversation_entries WHERE conversation_id = ? "
                         "ORDER BY seq", (conversation_id,),
                         json_columns=_JSON_COLUMNS - {"content"})

    def one(self, table: str, row_id: str) -> dict[str, Any] | None:
        """The row of ``table`` with ``id`` (or None)."""
        found = self.rows(f"SELECT * FROM {table} WHERE id = ?", (row_id,))
        return found[0] if found else None


def _normalise(row: dict[str, Any], json_columns: frozenset[str]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key in json_columns and isinstance(value, str):
            value = json.loads(value)
        elif key == "streamed" and value is not None:
            value = bool(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[key] = value
    return out
