"""Classifier results kept for a while, keyed by a hash of the text, never the text."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["ScoreCache", "text_key"]

Scores = dict[str, float]


def text_key(model: str, text: str) -> bytes:
    """The cache key of ``text`` as classified by ``model``: a SHA-256 digest."""
    # surrogatepass: a lone surrogate is still a distinct text with a distinct key.
    return hashlib.sha256(f"{model}\x00{text}".encode("utf-8", "surrogatepass")).digest()


class ScoreCache:
    """At most ``size`` results, each for ``ttl`` seconds of ``clock`` (monotonic), the least
    recently used dropped first. ``size`` 0 keeps nothing."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Scores]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Scores | None:
        """The scores kept for ``key``, or ``None`` when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, scores = entry
        if expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return scores

    def put(self, key: bytes, scores: Scores) -> None:
        """Keep ``scores`` for ``key``."""
        if self.size <= 0 or self.ttl <= 0:
            return
        self._entries[key] = (self.clock() + self.ttl, scores)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
