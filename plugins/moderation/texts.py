"""What the classifier reads: the request's model-read texts, cut to the model's size.

The texts come from the input guard's field walker (:mod:`plugins.guard.fields`), so the
classifier and the patterns always look at the same strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plugins.guard.fields import texts

__all__ = ["pieces", "request_texts"]

#: Characters each piece repeats from the end of the one before, so that a phrase cut by a
#: piece boundary is still read whole by one of the two.
OVERLAP = 200


def request_texts(operation_name: str, body: Any) -> Iterator[tuple[str, str]]:
    """``(path, text)`` for every string of ``body`` the model reads, in document order;
    nothing for operations without such strings."""
    return texts(operation_name, body)


def pieces(text: str, limit: int) -> list[str]:
    """``text`` as consecutive pieces of at most ``limit`` characters that overlap a little
    (one piece when it is short enough)."""
    if len(text) <= limit:
        return [text]
    overlap = min(OVERLAP, limit // 10)
    step = limit - overlap
    return [text[start:start + limit] for start in range(0, len(text) - overlap, step)]
