"""One small async database interface over PostgreSQL (psycopg 3 pool) and SQLite (aiosqlite).

SQL is written once with ``?`` placeholders; the PostgreSQL backend rewrites them to ``%s``.
Use only SQL both dialects accept (``INSERT ... ON CONFLICT DO NOTHING`` works in both).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from plugins.store.deadline import within

Row = dict[str, Any]
Params = Sequence[Any]

#: A ``?`` placeholder, or a quoted literal or identifier (kept as written: a ``?`` inside
#: one is text, not a parameter).
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?")
_MIGRATION_LOCK_KEY = 0x6D73_6964  # "msid": constant per application, any int8 works


class Executor(Protocol):
    """What a connection or transaction can do."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement for each parameter row."""

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """First row of a query as a dict, or None."""

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """All rows of a query as dicts."""


class Database(Executor, Protocol):
    """A pool of connections to one database."""

    dialect: str

    def transaction(self) -> Any:
        """``async with db.transaction() as tx:`` — statements on ``tx`` commit together."""

    async def executescript(self, script: str) -> None:
        """Run several statements (a migration) in one transaction."""

    async def ping(self) -> bool:
        """Whether the database answers right now."""

    def migration_lock(self) -> Any:
        """``async with db.migration_lock():`` — one migrating process at a time."""

    async def close(self) -> None:
        """Close every connection."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached (outage, not a bug in the SQL)."""


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders in psycopg's ``%s`` style (literal ``%`` doubled)."""
    return _PLACEHOLDER.sub(lambda m: "%s" if m.group() == "?" else m.group(),
                            sql.replace("%", "%%"))


class _PgExecutor:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cur = await self._conn.execute(_pg_sql(sql), params)
        return int(cur.rowcount or 0)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self._conn.cursor() as cur:
            await cur.executemany(_pg_sql(sql), list(rows))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        cur = await self._conn.execute(_pg_sql(sql), params)
        row = await cur.fetchone()
        if row is None:
            return None
        return dict(zip([c.name for c in cur.description], row, strict=True))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self._conn.execute(_pg_sql(sql), params)
        names = [c.name for c in cur.description] if cur.description else []
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


class PostgresDatabase:
    """PostgreSQL through a ``psycopg_pool.AsyncConnectionPool``."""

    dialect = "postgres"

    def __init__(self, conninfo: str, pool_size: int, timeout: float) -> None:
        from psycopg_pool import AsyncConnectionPool

        self._timeout = timeout
        self._conninfo = conninfo
        self.pool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=max(1, pool_size), open=False, timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            # psycopg_pool doubles its reconnect delay until reconnect_timeout (5 min by
            # default): after a long outage writes would resume minutes late. Giving up after
            # 10 s makes the next request start a fresh attempt with a 1 s delay.
            reconnect_timeout=10.0,
        )

    async def open(self, wait_seconds: float) -> None:
        """Open the pool, waiting up to ``wait_seconds`` for the first connection."""
        await self.pool.open(wait=False)
        try:
            await self.pool.wait(timeout=wait_seconds)
        except Exception as exc:
            await self.pool.close()
            raise DatabaseUnavailable(f"PostgreSQL not reachable: {_describe(exc)}") from None

    async def open_nowait(self) -> None:
        """Open the pool without waiting: it connects in the background (queries wait for a
        connection, up to the pool timeout, or fail with :class:`DatabaseUnavailable`)."""
        await self.pool.open(wait=False)

    async def reachable(self) -> str | None:
        """``None`` if a new connection can be made within the timeout, else why not.

        A connection of its own, not one from the pool: the pool retries with a back-off and
        would make a refused connection look like a timeout.
        """
        import psycopg

        async def connect() -> None:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=max(1, int(self._timeout)))
            await conn.close()

        try:
            await within(connect(), self._timeout)
        except psycopg.OperationalError as exc:
            return f"PostgreSQL not reachable: {_describe(exc)}"
        except (TimeoutError, OSError) as exc:
            return f"PostgreSQL not reachable: {type(exc).__name__}"
        return None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise DatabaseUnavailable(_describe(exc)) from exc

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._connection() as conn:
            return await _PgExecutor(conn).execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self._connection() as conn, conn.transaction():
            await _PgExecutor(conn).executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._connection() as conn:
            return await _PgExecutor(conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._connection() as conn:
            return await _PgExecutor(conn).fetchall(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._connection() as conn, conn.transaction():
            yield _PgExecutor(conn)

    async def executescript(self, script: str) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(script)

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[None]:
        # A session-level advisory lock on a connection of its own (not from the pool, which
        # may hold a single connection), so replicas started together apply each migration
        # exactly once.
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=max(1, int(self._timeout)))
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(_describe(exc)) from exc
        async with conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))

    async def ping(self) -> bool:
        try:
            await within(self.fetchone("SELECT 1 AS ok"), self._timeout)
            return True
        except (DatabaseUnavailable, TimeoutError):
            return False

    async def close(self) -> None:
        await self.pool.close()


# --- SQLite ----------------------------------------------------------------------------------


class _SqliteExecutor:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cur = await self._conn.execute(sql, tuple(params))
        return int(cur.rowcount or 0)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        cur = await self._conn.execute(sql, tuple(params))
        row = await cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self._conn.execute(sql, tuple(params))
        names = [d[0] for d in cur.description] if cur.description else []
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


class SqliteDatabase:
    """The embedded default: one SQLite file in WAL mode, one connection, serialised access."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def open(self, wait_seconds: float = 0) -> None:
        """Open (creating the file and its directory)."""
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(str(self.path), isolation_level=None)
        await self._conn.execute("PRAGMA busy_timeout=5000")
        # Worker processes opening a new file together race to switch it to WAL, and SQLite
        # answers the loser "database is locked" without waiting: switch one at a time.
        async with self.migration_lock():
            await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.execute("PRAGMA foreign_keys=ON")

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock:
            return await _SqliteExecutor(self._conn).execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._lock:
            return await _SqliteExecutor(self._conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            return await _SqliteExecutor(self._conn).fetchall(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteExecutor(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def executescript(self, script: str) -> None:
        async with self._lock:
            await self._conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;")

    async def ping(self) -> bool:
        return self._conn is not None

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[None]:
        # Worker processes may share the file: an exclusive lock on a file beside it makes
        # them migrate one after the other (the second then finds nothing pending). Not
        # reentrant: flock on a second handle of the same file would wait for itself.
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".migrate-lock")
        handle = await asyncio.to_thread(lock_path.open, "w")
        try:
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()  # closing releases the lock

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _describe(exc: BaseException) -> str:
    # psycopg messages can carry the connection string; keep only the first line, no password.
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"password=\S+", "password=***", text)
