"""Writing the auth plugin's local files so that what was written survives a crash: all of
the bytes, flushed to the disk, the directory entry too."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sync_directory", "write_synced"]


def write_synced(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may take less than it is given) and
    ``fsync`` it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def sync_directory(directory: Path) -> None:
    """``fsync`` a directory, so that a file created or renamed in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
