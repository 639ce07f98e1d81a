"""The store plugin: one database for every plugin that persists (keys, ownership, records).

With ``DB_HOST`` set it connects to PostgreSQL through a psycopg pool of ``DB_POOL_SIZE``
connections; otherwise it uses an embedded SQLite file under ``SIDECAR_SERVER_DATA_DIR``. Other
plugins reach it as ``app[plugins.store.DATABASE]`` and must come after ``store`` in the chain.

PostgreSQL unreachable at start-up stops the start, unless a plugin after the store can serve
without it (:data:`SERVES_WITHOUT_DATABASE`): then the store starts anyway and opens the
database in the background once it answers and its schema is found current
(:mod:`plugins.store.deferred`). A schema known to be behind always stops the start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from plugins.store.db import Database, DatabaseUnavailable, PostgresDatabase, SqliteDatabase
from plugins.store.deferred import GatedDatabase, Opener, SchemaBehind, StoreStatus
from plugins.store.migrations import migrate, pending
from proxy import hookimpl
from proxy.app import PLUGINS, SETTINGS
from proxy.settings import Setting, Settings, check_host, check_port

DATABASE = web.AppKey("database", Database)

__all__ = ["DATABASE", "SERVES_WITHOUT_DATABASE", "STORE_STATUS", "Database",
           "DatabaseUnavailable", "StoreStatus", "open_database", "run_with_database"]

logger = logging.getLogger("mistral_sidecar.store")


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
                "Timeout for getting a connection and for health checks.", minimum=0.1),
        Setting("db.startup_wait_seconds", "float", 30.0,
                "How long start-up waits for the database to answer.", minimum=0),
        Setting("db.migrate_on_start", "bool", False,
                "Apply pending migrations at start-up instead of refusing to start.",
                deprecated_env=("SIDECAR_MIGRATE_ON_START",)),
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


def _postgres(settings: Settings) -> PostgresDatabase:
    return PostgresDatabase(_conninfo(settings), int(settings["db.pool_size"]),
                            float(settings["db.timeout_seconds"]))


async def open_database(settings: Settings) -> Database:
    """Open the configured database (not migrated; see :func:`migrate`)."""
    if settings["db.host"]:
        pg = _postgres(settings)
        await pg.open(float(settings["db.startup_wait_seconds"]))
        return pg
    sqlite = SqliteDatabase(Path(settings["server.data_dir"]) / "sidecar.db")
    await sqlite.open()
    return sqlite


#: How the other plugins learn whether the database may be used yet (PostgreSQL only).
STORE_STATUS = web.AppKey("store_status", StoreStatus)
_OPENER = web.AppKey("store_opener", Opener)

#: A plugin later in the chain that can serve while PostgreSQL is unreachable at start-up, from
#: state of its own, sets a module attribute of this name to ``True`` (the auth plugin does:
#: its key snapshot). The store then starts without the database, its queries failing as an
#: outage until :class:`StoreStatus` opens, and that plugin decides at its own start-up: it
#: serves from its state, or waits for :meth:`StoreStatus.wait_open` and refuses to start.
#: Without such a plugin, an unreachable database stops the start-up as it always has.
SERVES_WITHOUT_DATABASE = "serves_without_database"


def _deferrable(app: web.Application) -> bool:
    """Whether a plugin after this one in the chain serves without the database."""
    chain = app[PLUGINS]
    plugins = [chain.pm.get_plugin(name) for name in chain.names]
    me = sys.modules[__name__]
    after = plugins[plugins.index(me) + 1:] if me in plugins else plugins
    return any(getattr(plugin, SERVES_WITHOUT_DATABASE, False) is True for plugin in after)


def schema_check(migrate_first: bool) -> Callable[[Database], Awaitable[None]]:
    """The start-up check of the schema: apply pending migrations first if allowed, then
    raise :class:`SchemaBehind` if any remain."""

    async def check(db: Database) -> None:
        # migrate() decides what is pending under its lock, so workers and replicas
        # starting together apply each migration once.
        if migrate_first:
            await migrate(db)
        todo = await pending(db)
        if todo:
            raise SchemaBehind(
                f"database needs {len(todo)} migration(s) "
                f"({', '.join(f'{m.version:04d}_{m.name}' for m in todo)}); run "
                "`mistral-sidecar migrate` or set SIDECAR_DB_MIGRATE_ON_START=true")

    return check


async def _start_deferrable(app: web.Application, settings: Settings) -> None:
    """PostgreSQL with a plugin that serves without it: start whether it answers or not."""
    pg = _postgres(settings)
    await pg.open_nowait()
    status = StoreStatus()
    migrate_first = bool(settings["db.migrate_on_start"])
    # A migration may take long: only a plain check has a deadline.
    opener = Opener(pg, status, schema_check(migrate_first),
                    timeout=float(settings["db.timeout_seconds"]),
                    verify_timeout=None if migrate_first else
                    4 * float(settings["db.timeout_seconds"]))
    try:
        await opener.attempt()
    except BaseException:
        await pg.close()
        raise
    if status.schema_behind:
        await pg.close()
        raise SchemaBehind(status.problem)
    app[STORE_STATUS] = status
    if status.is_open:
        app[DATABASE] = pg
        return
    logger.warning("%s; not waiting for it here: the plugins that can serve without it "
                   "decide whether the sidecar starts (it is retried in the background)",
                   status.problem)
    opener.start()
    app[_OPENER] = opener
    app[DATABASE] = GatedDatabase(pg, status)


@hookimpl
def startup(app: web.Application) -> Any:
    """Open the database and make sure its schema is current (see
    :data:`SERVES_WITHOUT_DATABASE` for PostgreSQL unreachable at start-up)."""

    async def start() -> None:
        settings = app[SETTINGS]
        if settings["db.host"] and _deferrable(app):
            await _start_deferrable(app, settings)
            return
        db = await open_database(settings)
        try:
            await schema_check(bool(settings["db.migrate_on_start"]))(db)
        except BaseException:
            await db.close()
            raise
        app[DATABASE] = db
        app[STORE_STATUS] = StoreStatus(is_open=True)

    return start()


@hookimpl
def shutdown(app: web.Application) -> Any:
    """Stop waiting for the database; close the pool."""

    async def stop() -> None:
        opener = app.get(_OPENER)
        if opener is not None:
            await opener.close()
        db = app.get(DATABASE)
        if db is not None:
            await db.close()

    return stop()


@hookimpl
def readiness(app: web.Application) -> Any:
    """Report whether the database answers (and why it may not be used yet)."""
    db = app.get(DATABASE)
    if db is None:
        return None
    status = app.get(STORE_STATUS)

    async def check() -> dict[str, Any]:
        # An unreachable database does not make the sidecar unready: keys work from the auth
        # plugin's memory and records wait in the spool, so taking the pod out of service
        # would turn a database outage into an outage of the app. Plugins that cannot serve
        # say so themselves (a full spool, for one). A schema that needs migrations is no
        # outage: it is a deployment mistake, and this process must not take traffic.
        report: dict[str, Any] = {"ok": True, "reachable": await db.ping(),
                                  "backend": db.dialect}
        if status is not None and status.problem:
            report["problem"] = status.problem
            report["ok"] = not status.schema_behind
        return {"database": report}

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
    SIDECAR_DB_MIGRATE_ON_START allows it) unless ``require_schema`` is false, and turns an
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
