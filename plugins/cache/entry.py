"""One stored answer and its encoding for a byte store (Redis)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Entry", "decode", "encode"]

_MAGIC = b"sidecar-cache/1"


@dataclass(frozen=True, slots=True)
class Entry:
    """A complete answer: its JSON ``body``, whether it was reassembled from a ``stream``
    (such a body never went through the hooks that rewrite JSON answers, the output guard's
    redaction for one), and when it was stored (wall-clock seconds)."""

    body: bytes
    stream: bool
    stored_at: float

    @property
    def size(self) -> int:
        """Bytes the entry takes, near enough."""
        return len(self.body) + 64


def encode(entry: Entry) -> bytes:
    """``entry`` as bytes: a one-line header, then the body."""
    header = b"%s %d %.3f\n" % (_MAGIC, 1 if entry.stream else 0, entry.stored_at)
    return header + entry.body


def decode(raw: bytes) -> Entry | None:
    """The entry ``raw`` holds, or ``None`` when it is not one (another version, damage)."""
    header, newline, body = raw.partition(b"\n")
    parts = header.split(b" ")
    if not newline or len(parts) != 3 or parts[0] != _MAGIC or parts[1] not in (b"0", b"1"):
        return None
    try:
        stored_at = float(parts[2])
    except ValueError:
        return None
    return Entry(body, parts[1] == b"1", stored_at)
