"""The spool: append-only JSON-lines segment files that hold records until the database has them.

Files are ``<data_dir>/spool/persistence/slot-<n>/<number>.jsonl``, numbered in write order.
Each process owns one slot (an exclusive ``flock`` on its ``.lock``, released by the kernel
even on ``kill -9``), so replicas may share a data directory; at start a process takes the
first free slot with what a dead predecessor left there, and adopts the files of every other
slot no live process holds.

The active segment is a shared memory map of its file: appending a record's line is a copy
into the kernel's page cache, with no system call, and a killed process loses nothing that
was spooled; ``fsync`` (for power loss) is the caller's choice of moment. The map's blocks
are reserved (``posix_fallocate``) before they are written, so a full disk shows as an
``OSError`` when the segment grows, never as a ``SIGBUS`` on a write. On copy-on-write
filesystems (btrfs, ZFS) a reserved block may still need new space when written, so there
the spool appends with ``write`` instead. Until a segment is
sealed, the unused rest of its file reads as NUL bytes; readers stop at the first one (a
JSON line never holds a raw NUL), and a sealed segment's file is cut to what was written.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
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
#: The first part of an active segment's file that is reserved and mapped; it doubles as it
#: fills, up to the segment size.
_FIRST_MAP_BYTES = 64 * 1024
#: Filesystems where writing a reserved block may need new space (copy-on-write): a full disk
#: would stop a process writing through a map with SIGBUS.
_COPY_ON_WRITE = frozenset({"btrfs", "zfs", "bcachefs"})


@dataclass(eq=False)
class Segment:
    """One spool file (or, with ``path`` ``None``, records kept only in memory).

    ``count`` records were appended, the first ``done`` of them are in the database;
    ``pending`` holds the rest in order, or is ``None`` when they were evicted from memory and
    must be read back from the file.
    """

    path: Path | None
    fd: int | None = None
    #: Appended to through a memory map (else with ``write``).
    mapped: bool = True
    #: The shared map records are appended through (``None`` until the first append) and how
    #: many bytes of the file it covers.
    map: mmap.mmap | None = field(default=None, repr=False)
    capacity: int = 0
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
    """The segment files of this process's slot under one spool root."""

    def __init__(self, root: Path, *, mapped: bool | None = None) -> None:
        """``mapped``: append through memory maps; by default, unless ``root`` is on a
        copy-on-write filesystem."""
        self.root = root
        self.directory = root
        self.mapped = (filesystem_type(root) not in _COPY_ON_WRITE if mapped is None
                       else mapped)
        self._lock_fd: int | None = None
        self._next_number = 1

    def open(self) -> list[Segment]:
        """Take a slot; return the segments earlier processes left, oldest first."""
        self.root.mkdir(parents=True, exist_ok=True)
        for slot in range(_MAX_SLOTS):
            fd = _try_lock(self.root / f"slot-{slot}")
            if fd is not None:
                break
        else:
            raise RuntimeError(f"no free spool slot under {self.root}")
        self.directory, self._lock_fd = self.root / f"slot-{slot}", fd
        own = self._segment_files(self.directory)
        if own:
            self._next_number = _number(own[-1]) + 1
        self._adopt_orphans()
        leftovers = []
        for path in self._segment_files(self.directory):
            _cut_padding(path)
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

    def _adopt_orphans(self) -> None:
        """Move the files of slots no live process holds into ours, after our own."""
        for other in sorted(self.root.glob("slot-*")):
            if other == self.directory or not other.is_dir():
                continue
            fd = _try_lock(other)
            if fd is None:
                continue
            try:
                for path in self._segment_files(other):
                    path.rename(self.directory / f"{self._next_number:012d}.jsonl")
                    self._next_number += 1
            finally:
                _unlock(fd)

    @staticmethod
    def _segment_files(directory: Path) -> list[Path]:
        return sorted(p for p in directory.iterdir() if _SEGMENT.match(p.name))

    def new_segment(self) -> Segment:
        """Create the next segment file, open for appending."""
        path = self.directory / f"{self._next_number:012d}.jsonl"
        self._next_number += 1
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        return Segment(path, fd=fd, mapped=self.mapped)

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
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return path

    @staticmethod
    def append(segment: Segment, data: bytes) -> None:
        """Copy ``data`` to the end of active ``segment``: in the file (the page cache) when
        this returns. Raises ``OSError`` when the file cannot grow (disk full)."""
        if not segment.mapped:
            assert segment.fd is not None
            _write_all(segment.fd, data)
            segment.size += len(data)
            segment.dirty = True
            return
        start = segment.size
        end = start + len(data)
        if end > segment.capacity:
            Spool._grow(segment, end)
        assert segment.map is not None
        segment.map[start:end] = data
        segment.size = end
        segment.dirty = True

    @staticmethod
    def _grow(segment: Segment, needed: int) -> None:
        """Reserve and map at least ``needed`` bytes of ``segment``'s file."""
        assert segment.fd is not None
        capacity = max(needed, 2 * segment.capacity, _FIRST_MAP_BYTES)
        # Blocks first: written pages of a map over unreserved blocks would SIGBUS on a full
        # disk. posix_fallocate also sets the file's size, which the map must not pass.
        os.posix_fallocate(segment.fd, segment.capacity, capacity - segment.capacity)
        if segment.map is None:
            segment.map = mmap.mmap(segment.fd, capacity)
        else:
            segment.map.resize(capacity)
        segment.capacity = capacity

    @staticmethod
    def _cut(segment: Segment, size: int) -> None:
        """Drop ``segment``'s map, if any, and cut its file to ``size`` bytes."""
        assert segment.fd is not None
        if segment.map is not None:
            segment.map.close()
            segment.map = None
        segment.capacity = 0
        os.ftruncate(segment.fd, size)

    @staticmethod
    def seal(segment: Segment) -> None:
        """Stop appending to ``segment`` (its file stays until its records are written)."""
        if segment.fd is not None:
            try:
                Spool._cut(segment, segment.size)
            finally:
                os.close(segment.fd)
                segment.fd = None

    @staticmethod
    def reset(segment: Segment) -> None:
        """Empty an active segment whose records are all in the database."""
        Spool._cut(segment, 0)
        segment.size = segment.count = segment.done = 0
        segment.dirty = False

    @staticmethod
    def remove(segment: Segment) -> None:
        """Delete a sealed segment whose records are all in the database."""
        Spool.seal(segment)
        if segment.path is not None:
            segment.path.unlink(missing_ok=True)

    def sync(self, segments: list[Segment]) -> None:
        """``fsync`` the dirty segments and the directory (blocking: run it in a thread).

        Each file is opened anew: the appending descriptor may be closed meanwhile by the
        event loop, and an ``fsync`` through any descriptor flushes the file.
        """
        for segment in segments:
            if segment.path is None or not segment.dirty:
                continue
            segment.dirty = False
            try:
                fd = os.open(segment.path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def iter_records(path: Path) -> Iterator[Record]:
        """Every record in a segment file, in order, up to the end of what was written (the
        first NUL byte, in the file of a segment that was never sealed).

        A line that does not parse (the torn tail of a write cut short) is skipped and logged.
        """
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                padding = line.find(b"\0")
                if padding >= 0:
                    line = line[:padding]
                if line.strip():
                    try:
                        yield Record.from_line(line)
                    except ValueError:
                        logger.warning("skipping unreadable line %d of spool file %s", number,
                                       path)
                if padding >= 0:
                    return

    def close(self) -> None:
        """Give up the slot."""
        if self._lock_fd is not None:
            _unlock(self._lock_fd)
            self._lock_fd = None


_MAX_SLOTS = 1024


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem ``path`` is on, from ``/proc/self/mountinfo`` (or the
    given text of one); ``None`` when it cannot be told."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mountinfo.splitlines():
        mount_fields, _, fs_fields = line.partition(" - ")
        parts = mount_fields.split()
        if len(parts) < 5 or not fs_fields:
            continue
        # Spaces and the like in mount points are escaped as octal (\040).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs_fields.split()[0]
    return kind


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, finishing a short write."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _cut_padding(path: Path) -> None:
    """Cut the file of a segment that was never sealed (its process died) to what was
    written: the unused rest of its map reads as NUL bytes."""
    with path.open("r+b") as handle:
        offset = 0
        while chunk := handle.read(1024 * 1024):
            padding = chunk.find(b"\0")
            if padding >= 0:
                handle.truncate(offset + padding)
                return
            offset += len(chunk)


def _number(path: Path) -> int:
    match = _SEGMENT.match(path.name)
    return int(match.group(1)) if match else 0


def _try_lock(directory: Path) -> int | None:
    """Lock a slot directory (created if need be); ``None`` if a live process holds it."""
    directory.mkdir(exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
