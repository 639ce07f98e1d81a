"""Label values safe to expose and bounded in number.

Values that come from upstream answers, callers or plugins (models, owners, statuses, event
fields) pass through :func:`safe_label` (charset ``[A-Za-z0-9_.:/@+-]``, at most
:data:`MAX_LABEL_LENGTH` characters), and each such label keeps its first distinct values only
(:class:`BoundedValues`), the rest counted as ``"other"``: whatever upstream sends, the
exposition parses and its series stay bounded.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_LABEL_LENGTH", "OTHER", "BoundedValues", "safe_label"]

#: Characters a label value keeps; anything else becomes "_". Every Prometheus parser reads
#: such values back unchanged (no quotes, backslashes, line breaks or surrogates to escape).
_UNSAFE_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.:/@+\-]")
#: Longest label value kept; a longer one becomes ``OTHER``.
MAX_LABEL_LENGTH = 100
#: The label value standing for everything past a label's bound (or too long to keep).
OTHER = "other"


def safe_label(value: Any) -> str:
    """``value`` as a label value safe to expose: characters outside
    ``[A-Za-z0-9_.:/@+-]`` replaced by ``_``, ``"none"`` for ``None`` or an empty value,
    ``"other"`` when longer than :data:`MAX_LABEL_LENGTH`.

    Every label value that comes from upstream answers, callers' requests or plugins passes
    through here (through :class:`BoundedValues` where it must also stay few)."""
    text = value if type(value) is str else ("" if value is None else str(value))
    if not text:
        return "none"
    if len(text) > MAX_LABEL_LENGTH:
        return OTHER
    return _UNSAFE_LABEL_CHARS.sub("_", text)


class BoundedValues:
    """One label's values, made safe (:func:`safe_label`) and bounded: past ``limit``
    distinct values, new ones become ``"other"``.

    Values come from upstream, callers or plugins (model names, owners, event fields); a
    misbehaving source must not be able to break the exposition or create unbounded series.
    """

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        """The label value to use for ``value``."""
        # ``seen`` holds only safe values, so a value found there as it is needs no cleaning.
        if type(value) is str and value in self.seen:
            return value
        text = safe_label(value)
        if text in self.seen or text == OTHER:
            return text
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(text)
        return text
