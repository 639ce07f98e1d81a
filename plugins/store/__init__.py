"""The store plugin: one database for every plugin that persists (keys, ownership, records).

With ``DB_HOST`` set it connects to PostgreSQL through a psycopg pool of ``DB_POOL_SIZE``
connections; otherwise it uses an embedded SQLite file under ``SIDECAR_DATA_DIR``. Other
plugins reach it as ``app[plugins.store.DATABASE]`` and must come after ``store`` in the chain.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from plugins.store.db import Database, DatabaseUnavailable, PostgresDatabase, SqliteDatabase
from plugins.store.migrations import migrate, pending
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.settings import Setting, Settings, check_host, check_port

DATABASE = web.AppKey("database", Database)

__all__ = ["DATABASE", "Database", "DatabaseUnavailable", "open_database", "run_with_database"]


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Database connection settings (the deployment guide's ``DB_*`` variables)."""
    return [
        Setting("db.host", "str", "", "PostgreSQL host; empty means the embedded SQLite store.",
                env="DB_HOST", check=check_host),
        Setting("db.port", "int", 5432, "PostgreSQL port.", env="DB_PORT", minimum=1,
                check=check_port),
        Setting("db.name", "str", "mistral_sidecar", "PostgreSQL database name.",
                env="DB_NAME"),
        Setting("db.user", "str", "mistral_sidecar", "PostgreSQL user.", env="DB_USER"),
        Setting("db.password", "str", "", "PostgreSQL password.", env="DB_PASSWORD",
                secret=True),
        Setting("db.pool_size", "int", 10, "Connections in the PostgreSQL pool.",
                env="DB_POOL_SIZE", minimum=1),
        Setting("db.timeout_seconds", "float", 5.0,
                "Timeout for getting a connection and for health checks.",
                env="SIDECAR_DB_TIMEOUT_SECONDS", minimum=0.1),
        Setting("db.startup_wait_seconds", "float", 30.0,
                "How long start-up waits for the database to answer.",
                env="SIDECAR_DB_STARTUP_WAIT_SECONDS", minimum=0),
        Setting("db.migrate_on_start", "bool", False,
                "Apply pending migrations at start-up instead of refusing to start.",
                env="SIDECAR_MIGRATE_ON_START"),
    ]


def _conninfo(settings: Settings) -> str:
    parts = {
        "host": settings["db.host"], "port": settings["db.port"],
        "dbname": settings["db.name"], "user": settings["db.user"],
    }
    if settings["db.password"]:
        parts["password"] = settings["db.password"]
    return " ".join(f"{k}={_quote_conninfo(str(v))}" for k, v in parts.items())


def _quote_conninfo(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def open_database(settings: Settings) -> Database:
    """Open the configured database (not migrated; see :func:`migrate`)."""
    if settings["db.host"]:
        pg = PostgresDatabase(_conninfo(settings), int(settings["db.pool_size"]),
                              float(settings["db.timeout_seconds"]))
        await pg.open(float(settings["db.startup_wait_seconds"]))
        return pg
    sqlite = SqliteDatabase(Path(settings["server.data_dir"]) / "sidecar.db")
    await sqlite.open()
    return sqlite


@hookimpl
def startup(app: web.Application) -> Any:
    """Open the database and make sure its schema is current."""

    async def start() -> None:
        settings = app[SETTINGS]
        db = await open_database(settings)
        try:
            # migrate() decides what is pending under its lock, so workers and replicas
            # starting together apply each migration once.
            if settings["db.migrate_on_start"]:
                await migrate(db)
            todo = await pending(db)
            if todo:
                raise RuntimeError(
                    f"database needs {len(todo)} migration(s) "
                    f"({', '.join(f'{m.version:04d}_{m.name}' for m in todo)}); run "
                    "`mistral-sidecar migrate` or set SIDECAR_MIGRATE_ON_START=true")
        except BaseException:
            await db.close()
            raise
        app[DATABASE] = db

    return start()


@hookimpl
def shutdown(app: web.Application) -> Any:
    """Close the pool."""
    db = app.get(DATABASE)
    return db.close() if db is not None else None


@hookimpl
def readiness(app: web.Application) -> Any:
    """Report whether the database answers."""
    db = app.get(DATABASE)
    if db is None:
        return None

    async def check() -> dict[str, Any]:
        # An unreachable database does not make the sidecar unready: keys work from the auth
        # cache and records wait in the spool, so taking the pod out of service would turn a
        # database outage into an outage of the app. Plugins that cannot serve say so
        # themselves (a full spool, for one).
        return {"database": {"ok": True, "reachable": await db.ping(),
                             "backend": db.dialect}}

    return check()


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``mistral-sidecar migrate``."""
    parser = subparsers.add_parser(
        "migrate", help="apply pending database migrations",
        description="Apply pending migrations from schema/ to the configured database "
        "(PostgreSQL with DB_HOST, else the embedded SQLite file).")
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file")
    parser.add_argument("--dry-run", action="store_true", help="only list what would run")
    parser.set_defaults(handler=_cmd_migrate)


def run_with_database(
    settings: Settings,
    work: Callable[[Database], Awaitable[int]],
    *,
    require_schema: bool = True,
) -> int:
    """Run a CLI command's ``work`` against the configured database; return its exit code.

    Opens the database, makes sure the schema is current (migrating when
    SIDECAR_MIGRATE_ON_START allows it) unless ``require_schema`` is false, and turns an
    unreachable database into one line and exit code 1 instead of a traceback.
    """

    async def run() -> int:
        try:
            db = await open_database(settings)
        except DatabaseUnavailable as exc:
            print(f"mistral-sidecar: {exc}", file=sys.stderr)
            return 1
        try:
            if require_schema:
                todo = await pending(db)
                if todo and settings["db.migrate_on_start"]:
                    await migrate(db)
                elif todo:
                    print("mistral-sidecar: the database needs migrations; run "
                          "`mistral-sidecar migrate` first", file=sys.stderr)
                    return 1
            return int(await work(db))
        except DatabaseUnavailable as exc:
            print(f"mistral-sidecar: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.close()

    return asyncio.run(run())


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Database) -> int:
        if args.dry_run:
            for m in await pending(db):
                print(f"pending {m.version:04d}_{m.name}")
            return 0
        for m in await migrate(db):
            print(f"applied {m.version:04d}_{m.name}")
        print(f"database is up to date ({db.dialect})")
        return 0

    return run_with_database(settings, work, require_schema=False)
