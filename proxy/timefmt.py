"""UTC timestamps as text, formatted once per second (log lines and stored records write
thousands a second)."""

from __future__ import annotations

import functools
import time


@functools.lru_cache(maxsize=4)
def utc_date_time(second: int) -> str:
    """The UTC date and time of day of Unix ``second``: ``2025-01-31T12:00:00``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
