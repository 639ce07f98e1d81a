"""A PostgreSQL database that was unreachable at start-up, opened once it answers.

Until the database has been reached *and* its schema found current, every query through
:class:`GatedDatabase` fails at once with :class:`~plugins.store.db.DatabaseUnavailable`, so
the plugins treat it as the outage it is (auth serves keys from its snapshot, persistence and
ownership records wait in their spools) and nothing ever runs against an unchecked schema.
:class:`Opener` keeps trying in the background; when the schema turns out to be behind, the
gate stays shut and :attr:`StoreStatus.problem` says why, until someone migrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from plugins.store.db import Database, DatabaseUnavailable, Executor, Params, PostgresDatabase, Row
from plugins.store.deadline import within

logger = logging.getLogger("mistral_sidecar.store")


class SchemaBehind(RuntimeError):
    """The database answers but needs migrations this process may not apply."""


class StoreStatus:
    """Whether the database may be used: reached, and its schema checked."""

    def __init__(self, is_open: bool = False, problem: str | None = None) -> None:
        self._opened = asyncio.Event()
        if is_open:
            self._opened.set()
        #: Why the database cannot be used yet (``None`` once it can).
        self.problem = problem
        #: Whether the problem is a schema that needs migrations (not an outage).
        self.schema_behind = False

    @property
    def is_open(self) -> bool:
        """Whether queries may run."""
        return self._opened.is_set()

    def opened(self) -> None:
        """The database answers and its schema is current."""
        self.problem = None
        self.schema_behind = False
        self._opened.set()

    def blocked(self, problem: str, schema_behind: bool = False) -> None:
        """Record why the database cannot be used yet."""
        self.problem = problem
        self.schema_behind = schema_behind

    async def wait_open(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the database to open; whether it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._opened.wait()
        return self.is_open


class GatedDatabase:
    """``inner`` behind a gate: every call is an outage until ``status`` is open."""

    def __init__(self, inner: PostgresDatabase, status: StoreStatus) -> None:
        self.inner = inner
        self.status = status
        self.dialect = inner.dialect

    def _check(self) -> None:
        if not self.status.is_open:
            raise DatabaseUnavailable(self.status.problem or "database not checked yet")

    async def execute(self, sql: str, params: Params = ()) -> int:
        """See :class:`~plugins.store.db.Executor`."""
        self._check()
        return await self.inner.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """See :class:`~plugins.store.db.Executor`."""
        self._check()
        await self.inner.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """See :class:`~plugins.store.db.Executor`."""
        self._check()
        return await self.inner.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """See :class:`~plugins.store.db.Executor`."""
        self._check()
        return await self.inner.fetchall(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """See :class:`~plugins.store.db.Database`."""
        self._check()
        async with self.inner.transaction() as tx:
            yield tx

    async def executescript(self, script: str) -> None:
        """See :class:`~plugins.store.db.Database`."""
        self._check()
        await self.inner.executescript(script)

    async def ping(self) -> bool:
        """Whether the database answers (false while it has not been reached yet)."""
        if not self.status.is_open and not self.status.schema_behind:
            return False
        return await self.inner.ping()

    def migration_lock(self) -> Any:
        """See :class:`~plugins.store.db.Database` (not gated: migrating opens the gate)."""
        return self.inner.migration_lock()

    async def close(self) -> None:
        """Close the pool."""
        await self.inner.close()


class Opener:
    """Tries every ``interval`` seconds to reach the database and run ``verify`` on it (which
    raises :class:`SchemaBehind` or an outage); opens ``status`` on the first success."""

    def __init__(self, db: PostgresDatabase, status: StoreStatus,
                 verify: Callable[[Database], Awaitable[None]], timeout: float,
                 verify_timeout: float | None, interval: float = 1.0) -> None:
        self.db = db
        self.status = status
        self.verify = verify
        self.timeout = timeout
        #: Deadline of ``verify`` (``None``: none, for a migration that may take long).
        self.verify_timeout = verify_timeout
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def attempt(self) -> bool:
        """One try; whether the database is now open."""
        problem = await self.db.reachable()
        if problem is not None:
            self.status.blocked(problem)
            return False
        try:
            if self.verify_timeout is None:
                await self.verify(self.db)
            else:
                await within(self.verify(self.db), self.verify_timeout)
        except SchemaBehind as exc:
            if not self.status.schema_behind:
                logger.error("the database answers again but cannot be used: %s", exc)
            self.status.blocked(str(exc), schema_behind=True)
            return False
        except (DatabaseUnavailable, TimeoutError, OSError) as exc:
            self.status.blocked(f"PostgreSQL not usable yet: {exc or type(exc).__name__}")
            return False
        if self.status.problem is not None:
            logger.info("the database answers: queries resume")
        self.status.opened()
        return True

    def start(self) -> None:
        """Keep trying in the background until the database opens."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-opener")

    async def _run(self) -> None:
        while not self.status.is_open:
            await asyncio.sleep(self.interval)
            try:
                await self.attempt()
            except Exception:
                # Must not die: it is the only way this process gets its database back.
                logger.exception("checking the database failed; retrying")

    async def close(self) -> None:
        """Stop trying."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
