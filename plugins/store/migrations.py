"""Applying the versioned SQL files in ``schema/<dialect>/`` in order, once each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from plugins.store.db import Database

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)"""


@dataclass(frozen=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    sql: str


def available(dialect: str) -> list[Migration]:
    """Every migration shipped for ``dialect``, in version order."""
    folder = resources.files("schema").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in schema/{dialect}")
    return found


async def applied_versions(db: Database) -> set[int]:
    """Versions already recorded in the database."""
    await db.execute(_BOOKKEEPING)
    rows = await db.fetchall("SELECT version FROM schema_migrations")
    return {int(row["version"]) for row in rows}


async def pending(db: Database) -> list[Migration]:
    """Migrations not yet applied."""
    done = await applied_versions(db)
    return [m for m in available(db.dialect) if m.version not in done]


async def migrate(db: Database) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return what was applied.

    Runs under the database's migration lock, and decides what is pending only once it holds
    it, so concurrent starts with SIDECAR_MIGRATE_ON_START do not race.
    """
    applied = []
    async with db.migration_lock():
        for migration in await pending(db):
            record = (
                f"INSERT INTO schema_migrations (version, name) VALUES "
                f"({migration.version}, '{migration.name}');"
            )
            await db.executescript(migration.sql + "\n" + record)
            applied.append(migration)
    return applied
