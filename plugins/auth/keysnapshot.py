"""The key table on disk, so that a replica starting during a database outage can serve the
keys that existed before it.

It lives at ``<server.data_dir>/auth/keys.json`` (``SIDECAR_DATA_DIR``), in a directory of mode
0700, as a file of mode 0600 replaced atomically (written to a temporary file in the same
directory, synced, renamed over the old one), so a reader never sees half a table. Each key is
stored as in the database: id, owner, organisation, role, name, creation, expiry, revocation,
rotation and the *hash* of its secret, never the secret.

Why a hash is safe to keep there: a secret is 32 random bytes (256 bits, see
:mod:`plugins.auth.keys`), so its SHA-256 digest cannot be turned back into it, neither by
inverting SHA-256 nor by guessing (there is no dictionary of likely secrets to try), and the
sidecar accepts only the secret itself, never the digest. The file still says which key ids,
owners and organisations exist, hence its modes. ``SIDECAR_AUTH_KEY_SNAPSHOT=false`` turns it
off (a replica then cannot start while the database is down).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plugins.auth.durable import sync_directory, write_synced
from plugins.auth.keystore import KeyRecord

logger = logging.getLogger("mistral_sidecar.auth")

FORMAT = 1
#: Under ``server.data_dir``.
RELATIVE_PATH = Path("auth") / "keys.json"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A key table read back from disk; ``written_at`` is when the database last vouched for
    it (epoch seconds)."""

    written_at: float
    keys: tuple[KeyRecord, ...]


class SnapshotUnusable(Exception):
    """There is no snapshot, or it cannot be read; the message says which."""


class KeySnapshot:
    """Reads and writes the snapshot file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, keys: Iterable[KeyRecord], written_at: float) -> None:
        """Replace the file with ``keys`` (blocking: run it in a thread)."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o077:
            directory.chmod(0o700)
        data = json.dumps({"format": FORMAT, "written_at": written_at,
                           "keys": [asdict(k) for k in keys]},
                          separators=(",", ":")).encode()
        # A name of its own: replicas and workers may share the directory.
        temporary = directory / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                write_synced(fd, data)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            sync_directory(directory)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self) -> Snapshot:
        """The snapshot on disk (blocking), or :class:`SnapshotUnusable`."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise SnapshotUnusable(f"no key snapshot at {self.path}") from None
        except OSError as exc:
            raise SnapshotUnusable(f"key snapshot {self.path} unreadable: {exc.strerror}") \
                from None
        try:
            document: Any = json.loads(raw)
            if document.get("format") != FORMAT:
                raise ValueError(f"format {document.get('format')!r}")
            keys = tuple(KeyRecord.from_row(row) for row in document["keys"])
            return Snapshot(float(document["written_at"]), keys)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SnapshotUnusable(f"key snapshot {self.path} unreadable ({exc})") from None
