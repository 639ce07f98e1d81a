"""The ownership spool: records the database could not take yet, in an append-only,
``fsync``'d JSON-lines file of this process's own.

Files are ``<dir>/<process>.jsonl``, each beside a ``<process>.lock`` that its process holds
with an exclusive ``flock`` for as long as it lives (the kernel releases it even on
``kill -9``). Any process may therefore adopt the file of a dead one: it copies the records
into its own file (synced) before removing the dead one's, so a record is always in at least
one file. Replicas and worker processes may share the directory.

An append returns once the record is on disk (``fsync``), so a caller that was answered has
a record that survives the process and the machine. When records have reached the database,
the file is rewritten with the rest (a new file renamed over the old one), or removed.

The persistence plugin has a spool of its own, built for a record on every request; ownership
records are rare (only creates, only while the database is unreachable), and keeping this
one here keeps the auth plugin independent of the persistence plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.auth.durable import sync_directory, write_synced

logger = logging.getLogger("mistral_sidecar.auth")

Line = dict[str, Any]


class OwnershipSpool:
    """This process's spool file under ``directory``, and the adoption of dead ones'."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock_fd: int | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        """This process's spool file (absent while it holds nothing)."""
        return self.directory / f"{self.name}.jsonl"

    # --- blocking parts (run in a thread) ----------------------------------------------------

    def open(self) -> list[Line]:
        """Take this process's file; return the records dead processes left (now ours)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # Locked under a name adopters ignore, then renamed: no other process can ever see
        # this lock file unlocked and take it for a dead one's.
        fresh = self.directory / f"{self.name}.lock.new"
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(fresh, self.directory / f"{self.name}.lock")
        self._lock_fd = fd
        return self._adopt()

    def _adopt(self) -> list[Line]:
        adopted: list[Line] = []
        for data in sorted(self.directory.glob("*.jsonl")):
            if data.stem == self.name:
                continue
            lock_path = data.with_suffix(".lock")
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                records = read_lines(data)
                if records:
                    self._append(records)
                data.unlink(missing_ok=True)
                data.with_suffix(".tmp").unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)
                adopted.extend(records)
                if records:
                    logger.info("adopted %d ownership record(s) from %s", len(records),
                                data.name)
            finally:
                os.close(fd)
        for stale in [*self.directory.glob("*.lock"), *self.directory.glob("*.lock.new")]:
            # Lock files of dead processes that spooled nothing.
            if not stale.name.startswith(self.name + ".") \
                    and not (self.directory / (stale.name.split(".")[0] + ".jsonl")).exists():
                _remove_if_unlocked(stale)
        return adopted

    def _append(self, records: list[Line]) -> None:
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n"
                        for r in records)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            write_synced(fd, data)
        finally:
            os.close(fd)
        if created:
            sync_directory(self.directory)

    def _rewrite(self, records: list[Line]) -> None:
        if not records:
            if self.path.exists():
                self.path.unlink()
                sync_directory(self.directory)
            return
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_synced(fd, b"".join(json.dumps(record, separators=(",", ":")).encode()
                                      + b"\n" for record in records))
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        sync_directory(self.directory)

    # --- the event loop's side -----------------------------------------------------------

    async def append(self, records: list[Line]) -> None:
        """Add records; returns once they are on disk. Raises ``OSError`` (disk full...)."""
        async with self._lock:
            await asyncio.to_thread(self._append, records)

    async def adopt_orphans(self) -> list[Line]:
        """Take over the files of processes that died since; returns their records."""
        if self._lock_fd is None:
            return []
        async with self._lock:
            return await asyncio.to_thread(self._adopt)

    async def rewrite(self, snapshot: Callable[[], list[Line]]) -> None:
        """Replace the file's content with ``snapshot()``, taken once no append is running
        (so nothing appended before it is lost)."""
        async with self._lock:
            await asyncio.to_thread(self._rewrite, snapshot())

    def close(self) -> None:
        """Give the file up (it stays for the next process if it holds records)."""
        if self._lock_fd is None:
            return
        if not self.path.exists():
            with contextlib.suppress(OSError):
                (self.directory / f"{self.name}.lock").unlink()
        os.close(self._lock_fd)
        self._lock_fd = None


def read_lines(path: Path) -> list[Line]:
    """The records of one spool file; a torn last line (a write cut short) is skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records: list[Line] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            logger.warning("skipping unreadable line %d of %s", number, path)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _remove_if_unlocked(lock_path: Path) -> None:
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock_path.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(fd)
