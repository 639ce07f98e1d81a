"""The write-behind pipeline: records go to the spool at once and to the database in batches.

Design (write-ahead spool):

1. :meth:`WriteBehind.enqueue` runs on the request path and does no database I/O. It copies
   the request's records into the active spool segment through its shared memory map (into
   the kernel's page cache, without a system call: a ``kill -9`` of the sidecar cannot lose
   them) and keeps them in memory. It is called from ``on_end``, which the core runs
   before it ends the response (a small answer: before sending it at all), so a caller
   holding a complete answer implies its records are in the spool; deferring the copy, even
   to the end of the event-loop iteration, would lose that.
2. A background task takes batches in spool order and commits each in one transaction. Once
   a segment's records are all committed, its file is deleted (the active one is truncated).
3. While the database is unreachable (``DatabaseUnavailable``, timeouts), records simply
   accumulate: the spool is ``fsync``'d after every failed attempt and every flush tick, the
   writer retries with capped exponential backoff and, once a write succeeds, replays the
   backlog in order. Every write is an idempotent upsert, so a batch that committed but whose
   acknowledgement was lost is harmless to write again: each row exists exactly once.
4. Memory is bounded: past ``max_memory_records`` the newest segments are dropped from memory
   and read back from their files when their turn comes.
5. With ``spool_max_bytes`` reached, the ``reject`` policy makes :meth:`spool_full` true (the
   plugin answers 503) while records of requests already in flight are still spooled; the
   ``accept`` policy keeps new records in memory only, dropping them beyond the memory bound.

A record that the database refuses for a reason other than availability (a bug, bad data) is
moved to a ``rejected`` file so it cannot block the records behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

from plugins.persistence.config import Options
from plugins.persistence.records import Record
from plugins.persistence.spool import Segment, Spool
from plugins.persistence.writer import write_batch
from plugins.store.db import Database, DatabaseUnavailable

logger = logging.getLogger("mistral_sidecar.persistence")

Emit = Callable[..., None]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database is unavailable" rather than "this write is bad"."""
    if isinstance(exc, DatabaseUnavailable | TimeoutError | ConnectionError | OSError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a write failure for events and logs."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class WriteBehind:
    """Spool-first, batched, outage-tolerant writer of records to one database."""

    def __init__(
        self,
        db: Database,
        spool: Spool,
        options: Options,
        emit: Emit,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.spool = spool
        self.options = options
        self._emit = emit
        self._wall = wall
        self.segments: deque[Segment] = deque()
        self.depth = 0
        self.memory = 0
        self.spool_bytes = 0
        self.failures_total = 0
        self.dropped_total = 0
        self.rejected_total = 0
        self.appended_total = 0
        self.committed_total = 0
        self.outage_since: float | None = None
        self._consecutive_failures = 0
        self._backlog_base: int | None = None
        self._replay_target: int | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what an earlier process left in the spool, then start the writer task."""
        leftovers = await asyncio.to_thread(self.spool.open)
        for segment in leftovers:
            self.segments.append(segment)
            self.depth += segment.count
            self.spool_bytes += segment.size
            self.appended_total += segment.count
        if leftovers:
            logger.info("replaying %d spooled records from %d file(s)", self.depth,
                        len(leftovers))
            self._backlog_base = 0
            self._replay_target = self.appended_total
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="persistence")

    async def stop(self) -> None:
        """Write what the database will take in ``shutdown_flush`` seconds; spool the rest."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        async with self._lock:
            if self.outage_since is None and self.depth:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.shutdown_flush):
                        while self.depth and await self._flush_once():
                            pass
            self._spool_volatile()
            await self._sync()
            for segment in self.segments:
                Spool.seal(segment)
            if self.depth:
                self._emit("persistence.spooled", records=self.depth)
            self._closed = True
            self.spool.close()

    # --- request path ------------------------------------------------------------------------

    def enqueue(self, records: Sequence[Record]) -> None:
        """Take a request's records: in the spool file when this returns, written to the
        database later.

        Never raises: persistence trouble must not become request trouble.
        """
        if not records:
            return
        data = (records[0].to_line() if len(records) == 1
                else b"".join([r.to_line() for r in records]))
        if self._closed:
            self._spool_late(data)
            return
        segment = self._target()
        if segment.path is not None:
            try:
                Spool.append(segment, data)
                self.spool_bytes += len(data)
            except OSError as exc:
                segment = self._spool_write_failed(segment, exc)
        if segment.path is None and self.memory + len(records) > self.options.max_memory_records:
            self.dropped_total += len(records)
            self._failed(f"{len(records)} record(s) dropped: spool full and memory queue full")
            return
        self._accept(segment, records)
        if segment.active and segment.size >= self.options.segment_bytes:
            Spool.seal(segment)
        if self.memory > self.options.max_memory_records:
            self._evict()

    def _accept(self, segment: Segment, records: Sequence[Record]) -> None:
        """Count ``records`` in: queued in ``segment`` (in memory) for the database, whose
        writer is woken once a batch is due."""
        self._place(segment, records)
        count = len(records)
        self.depth += count
        self.memory += count
        self.appended_total += count
        if self.depth >= self.options.batch_size and self.outage_since is None:
            self._wake.set()

    @staticmethod
    def _place(segment: Segment, records: Sequence[Record]) -> None:
        """Add ``records`` to ``segment``'s records in memory."""
        assert segment.pending is not None
        segment.pending.extend(records)
        if segment.oldest_at is None:
            segment.oldest_at = records[0].at
        segment.count += len(records)

    def _spool_write_failed(self, segment: Segment, exc: OSError) -> Segment:
        """The spool file refused a write: stop using it; the records stay in memory."""
        Spool.seal(segment)
        self._failed(f"spool write failed: {exc.strerror or exc}")
        return self._volatile_tail()

    def spool_full(self) -> bool:
        """Whether the spool has reached ``spool_max_bytes``."""
        return self.spool_bytes >= self.options.spool_max_bytes

    def lag_seconds(self) -> float:
        """Age of the oldest record not yet in the database (0 when there is none)."""
        for segment in self.segments:
            if segment.remaining:
                oldest = segment.pending[0].at if segment.pending else segment.oldest_at
                return max(0.0, self._wall() - oldest) if oldest else 0.0
        return 0.0

    async def flush(self) -> bool:
        """Write everything pending now; ``True`` if nothing is left (used by tests, CLI)."""
        async with self._lock:
            while self.depth and await self._flush_once():
                pass
            return self.depth == 0

    # --- where records go --------------------------------------------------------------------

    def _target(self) -> Segment:
        tail = self.segments[-1] if self.segments else None
        spool_it = not (self.spool_full() and self.options.spool_full_policy == "accept")
        if not spool_it:
            return self._volatile_tail()
        if tail is not None and tail.active:
            return tail
        try:
            return self._push(self.spool.new_segment())
        except OSError as exc:
            self._failed(f"spool file not created: {exc.strerror or exc}")
            return self._volatile_tail()

    def _volatile_tail(self) -> Segment:
        tail = self.segments[-1] if self.segments else None
        if tail is not None and tail.path is None:
            return tail
        return self._push(Segment(None))

    def _push(self, segment: Segment) -> Segment:
        if self.segments:
            Spool.seal(self.segments[-1])
        self.segments.append(segment)
        return segment

    def _evict(self) -> None:
        """Drop the newest spooled records from memory (their files keep them)."""
        evicted = 0
        for segment in reversed(self.segments):
            if self.memory <= self.options.max_memory_records:
                break
            if segment.path is None or segment.pending is None:
                continue
            Spool.seal(segment)
            if segment.pending:
                segment.oldest_at = segment.pending[0].at
            self.memory -= len(segment.pending)
            evicted += len(segment.pending)
            segment.pending = None
        if evicted:
            self._emit("persistence.spooled", records=evicted)

    def _spool_volatile(self) -> None:
        """At shutdown, records kept only in memory go to the spool after all (over its limit),
        each group named to sort right after the segment that preceded it."""
        previous = 0
        for segment in self.segments:
            if segment.path is not None:
                previous = self.spool.number_of(segment)
                continue
            if not segment.pending:
                continue
            try:
                written = self.spool.write_after(previous, b"".join(
                    r.to_line() for r in segment.pending))
            except OSError as exc:
                self._failed(f"records lost at shutdown: {exc.strerror or exc}")
                continue
            segment.path, segment.size, segment.dirty = written, written.stat().st_size, True

    def _spool_late(self, data: bytes) -> None:
        # A completion that arrives after shutdown (a cancelled request finishing late).
        try:
            self.spool.write_after(None, data, sync=True)
        except OSError as exc:
            logger.error("record lost after shutdown: %s", exc)

    # --- the writer task ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            delay = (self._retry_delay() if self.outage_since is not None
                     else self.options.flush_interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    # Full batches go at once; a partial one waits for the next tick, so a
                    # steady trickle is written in few, large transactions.
                    while self.depth and await self._flush_once():
                        if self.depth < self.options.batch_size:
                            break
                    if self.outage_since is not None:
                        await self._sync()
            except Exception:
                logger.exception("persistence writer failed; retrying")

    def _retry_delay(self) -> float:
        return min(self.options.retry_max, 0.1 * 2 ** min(self._consecutive_failures, 16))

    async def _flush_once(self) -> bool:
        """Write one batch; ``False`` if there was nothing to write or the database is down."""
        batch, spans = self._take(self.options.batch_size)
        if not batch:
            return False
        try:
            try:
                await self._write(batch)
            except Exception as exc:
                if is_transient(exc):
                    raise
                await self._write_one_by_one(batch, exc)
        except Exception as exc:
            if not is_transient(exc):
                raise
            await self._on_outage(exc)
            return False
        self._commit(spans)
        return True

    async def _write(self, batch: Sequence[Record]) -> None:
        async with asyncio.timeout(self.options.write_timeout):
            async with self.db.transaction() as tx:
                await write_batch(tx, batch, self.db.dialect)

    async def _write_one_by_one(self, batch: Sequence[Record], first: Exception) -> None:
        logger.warning("batch refused by the database (%s); writing records one by one",
                       describe(first))
        for record in batch:
            try:
                await self._write([record])
            except Exception as exc:
                if is_transient(exc):
                    raise
                self._reject(record, exc)

    def _reject(self, record: Record, exc: Exception) -> None:
        self.rejected_total += 1
        self._failed(f"record rejected by the database ({describe(exc)}); kept in "
                     f"{self.options.rejected_path.name}")
        try:
            self.options.rejected_path.parent.mkdir(parents=True, exist_ok=True)
            with self.options.rejected_path.open("ab") as handle:
                handle.write(record.to_line())
        except OSError as error:
            logger.error("cannot keep rejected record: %s", error)

    def _take(self, limit: int) -> tuple[list[Record], list[tuple[Segment, int]]]:
        batch: list[Record] = []
        spans: list[tuple[Segment, int]] = []
        for segment in self.segments:
            if len(batch) >= limit:
                break
            if not segment.remaining:
                continue
            if segment.pending is None:
                self._reload(segment)
            assert segment.pending is not None
            take = min(limit - len(batch), len(segment.pending))
            batch.extend(islice(segment.pending, take))
            spans.append((segment, take))
        return batch, spans

    def _reload(self, segment: Segment) -> None:
        assert segment.path is not None
        try:
            records = list(islice(Spool.iter_records(segment.path), segment.done, None))
        except OSError as exc:
            lost = segment.remaining
            self._failed(f"spool file unreadable, {lost} record(s) lost: {describe(exc)}")
            records = []
            segment.count = segment.done
            self.depth -= lost
        segment.pending = deque(records)
        self.memory += len(records)

    def _commit(self, spans: list[tuple[Segment, int]]) -> None:
        for segment, count in spans:
            segment.done += count
            if segment.pending is not None:
                for _ in range(count):
                    segment.pending.popleft()
                self.memory -= count
            self.depth -= count
            self.committed_total += count
        while self.segments and not self.segments[0].remaining and not self.segments[0].active:
            finished = self.segments.popleft()
            if finished.path is not None:
                self.spool_bytes -= finished.size
                Spool.remove(finished)
        if self.segments and self.segments[-1].active and not self.segments[-1].remaining:
            tail = self.segments[-1]
            if tail.size:
                self.spool_bytes -= tail.size
                Spool.reset(tail)
        self._healthy()

    # --- health ------------------------------------------------------------------------------

    async def _on_outage(self, exc: BaseException) -> None:
        self.failures_total += 1
        self._consecutive_failures += 1
        first = self.outage_since is None
        if first:
            self.outage_since = self._wall()
            self._backlog_base = (self.committed_total if self._backlog_base is None
                                  else self._backlog_base)
            self._replay_target = None
            logger.warning("database unavailable, keeping records in the spool: %s",
                           describe(exc))
        self._emit("persistence.write_failed", error=describe(exc))
        await self._sync()
        if first:
            self._emit("persistence.spooled", records=self.depth)

    def _healthy(self) -> None:
        if self.outage_since is not None:
            logger.info("database writable again after %.1f s; replaying the spool",
                        self._wall() - self.outage_since)
            self.outage_since = None
            self._consecutive_failures = 0
            self._replay_target = self.appended_total
        if (self._replay_target is not None and self._backlog_base is not None
                and self.committed_total >= self._replay_target):
            self._emit("persistence.replayed",
                       records=self.committed_total - self._backlog_base)
            self._replay_target = self._backlog_base = None

    def _failed(self, message: str) -> None:
        self.failures_total += 1
        logger.error("persistence: %s", message)
        self._emit("persistence.write_failed", error=message)

    async def _sync(self) -> None:
        dirty = [s for s in self.segments if s.path is not None and s.dirty]
        if dirty:
            try:
                await asyncio.to_thread(self.spool.sync, dirty)
            except OSError as exc:
                self._failed(f"spool fsync failed: {exc.strerror or exc}")

    def stats(self) -> dict[str, Any]:
        """Current figures for gauges and readiness."""
        return {
            "queue_depth": self.depth,
            "memory_records": self.memory,
            "spool_bytes": self.spool_bytes,
            "lag_seconds": round(self.lag_seconds(), 3),
            "database_writable": self.outage_since is None,
            "write_failures_total": self.failures_total,
            "dropped_records_total": self.dropped_total,
            "rejected_records_total": self.rejected_total,
        }
