"""The spool: append-only JSON-lines segment files that hold records until the database has them.

Files are ``<data_dir>/spool/persistence/<number>.jsonl``, numbered in write order. One process
owns the directory at a time (an exclusive ``flock`` on ``.lock``, released by the kernel even
on ``kill -9``). A record's line reaches the kernel with one ``write`` before anything else
happens to it, so a killed process loses nothing that was spooled; ``fsync`` (for power loss)
is the caller's choice of moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from plugins.persistence.records import Record

logger = logging.getLogger("mistral_sidecar.persistence")

# "<number>.jsonl", or "<number>_<k>.jsonl" for records written at shutdown that belong right
# after segment <number> (names sort in write order).
_SEGMENT = re.compile(r"^(\d{12})(?:_(\d+))?\.jsonl$")


class SpoolLocked(RuntimeError):
    """Another process owns the spool directory."""


@dataclass(eq=False)
class Segment:
    """One spool file (or, with ``path`` ``None``, records kept only in memory).

    ``count`` records were appended, the first ``done`` of them are in the database;
    ``pending`` holds the rest in order, or is ``None`` when they were evicted from memory and
    must be read back from the file.
    """

    path: Path | None
    fd: int | None = None
    size: int = 0
    count: int = 0
    done: int = 0
    pending: deque[Record] | None = field(default_factory=deque)
    oldest_at: float | None = None
    dirty: bool = False

    @property
    def active(self) -> bool:
        """Whether records are still being appended to it."""
        return self.fd is not None

    @property
    def remaining(self) -> int:
        """Records not yet in the database."""
        return self.count - self.done


class Spool:
    """The segment files of one spool directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None
        self._next_number = 1

    def open(self) -> list[Segment]:
        """Take ownership of the directory; return the segments earlier processes left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(
                f"spool directory {self.directory} is used by another sidecar process; give "
                "each replica its own SIDECAR_DATA_DIR") from None
        self._lock_fd = fd
        leftovers = []
        for path in sorted(self.directory.iterdir()):
            match = _SEGMENT.match(path.name)
            if not match:
                continue
            self._next_number = max(self._next_number, int(match.group(1)) + 1)
            count, oldest = 0, None
            for record in self.iter_records(path):
                count += 1
                oldest = record.at if oldest is None else oldest
            if not count:
                path.unlink(missing_ok=True)
                continue
            # Left on disk, read back batch by batch: a full spool may not fit in memory.
            leftovers.append(Segment(path, size=path.stat().st_size, count=count, pending=None,
                                     oldest_at=oldest))
        return leftovers

    def new_segment(self) -> Segment:
        """Create the next segment file, open for appending."""
        path = self.directory / f"{self._next_number:012d}.jsonl"
        self._next_number += 1
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        return Segment(path, fd=fd)

    @staticmethod
    def number_of(segment: Segment) -> int:
        """The sequence number in a segment's file name (0 for one kept in memory)."""
        match = _SEGMENT.match(segment.path.name) if segment.path is not None else None
        return int(match.group(1)) if match else 0

    def write_after(self, previous: int | None, data: bytes, *, sync: bool = False) -> Path:
        """Write ``data`` as a complete file that sorts right after segment ``previous``
        (``None``: after every existing one); returns its path."""
        if previous is None:
            path = self.directory / f"{self._next_number:012d}.jsonl"
            self._next_number += 1
        else:
            k = 1
            while (path := self.directory / f"{previous:012d}_{k}.jsonl").exists():
                k += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return path

    @staticmethod
    def append(segment: Segment, data: bytes) -> None:
        """Write ``data`` at the end of ``segment`` (raises ``OSError``, e.g. disk full)."""
        assert segment.fd is not None
        view = memoryview(data)
        while view:
            written = os.write(segment.fd, view)
            view = view[written:]
        segment.size += len(data)
        segment.dirty = True

    @staticmethod
    def seal(segment: Segment) -> None:
        """Stop appending to ``segment`` (its file stays until its records are written)."""
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None

    @staticmethod
    def reset(segment: Segment) -> None:
        """Empty an active segment whose records are all in the database."""
        assert segment.fd is not None
        os.ftruncate(segment.fd, 0)
        segment.size = segment.count = segment.done = 0
        segment.dirty = False

    @staticmethod
    def remove(segment: Segment) -> None:
        """Delete a sealed segment whose records are all in the database."""
        Spool.seal(segment)
        if segment.path is not None:
            segment.path.unlink(missing_ok=True)

    def sync(self, segments: list[Segment]) -> None:
        """``fsync`` the dirty segments and the directory (blocking: run it in a thread)."""
        for segment in segments:
            if segment.path is None or not segment.dirty:
                continue
            segment.dirty = False
            try:
                if segment.fd is not None:
                    os.fsync(segment.fd)
                else:
                    fd = os.open(segment.path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except FileNotFoundError:
                continue
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def iter_records(path: Path) -> Iterator[Record]:
        """Every record in a segment file, in order.

        A line that does not parse (the torn tail of a write cut short) is skipped and logged.
        """
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield Record.from_line(line)
                except ValueError:
                    logger.warning("skipping unreadable line %d of spool file %s", number, path)

    def close(self) -> None:
        """Give up ownership of the directory."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
