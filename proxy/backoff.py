"""Backoff arithmetic shared by the plugins that wait on upstream: full-jitter delays and
``Retry-After``.

Pure functions with the random source and the wall clock passed in, so callers (and tests)
decide where time and randomness come from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["full_jitter_delay", "parse_retry_after", "retry_after_header"]


def full_jitter_delay(
    retry_number: int,
    base_seconds: float,
    max_seconds: float,
    random: Callable[[], float],
) -> float:
    """The wait before retry ``retry_number`` (1 for the first retry), Envoy's way.

    The delay is uniform in ``[0, (2**retry_number - 1) * base_seconds)``, the upper bound
    capped at ``max_seconds``: "full jitter", which spreads a crowd of retrying clients over
    the whole interval instead of letting them return in lockstep. ``random`` returns a float
    in ``[0, 1)``.
    """
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    # 2**n overflows floats for silly n; the cap makes anything past 64 irrelevant anyway.
    upper = min((2 ** min(retry_number, 64) - 1) * base_seconds, max_seconds)
    return max(0.0, random() * upper)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds upstream asked us to wait, or ``None`` when it did not say (or said nonsense).

    ``retry-after-ms`` (milliseconds, as OpenAI-style APIs send it) is the more precise value
    and wins over ``Retry-After``, which holds either delay-seconds or an HTTP-date (RFC 9110
    section 10.2.3). ``now`` is the current wall-clock time (``time.time()``), needed for
    dates. A date in the past means "now": ``0.0``. ``headers`` should be case-insensitive
    (aiohttp's headers are).
    """
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value / 1000
    raw = _header(headers, "Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value for a wait of ``seconds``: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
