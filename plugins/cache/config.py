"""The cache's settings and what they resolve to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugins.cache.policy import CACHEABLE_OPERATIONS
from proxy.settings import Setting, Settings

__all__ = ["CacheConfig", "settings"]


def _check_operations(value: Any) -> str | None:
    unknown = sorted(set(value) - CACHEABLE_OPERATIONS)
    if unknown:
        return (f"cannot cache {', '.join(unknown)}; cacheable operations are "
                f"{', '.join(sorted(CACHEABLE_OPERATIONS))}")
    return None


def settings() -> list[Setting]:
    """The ``cache.*`` settings (environment variables ``SIDECAR_CACHE_*``)."""
    return [
        Setting("cache.enabled", "bool", False,
                "Answer repeated identical requests of cache.operations from a cache kept per "
                "organisation (Redis when redis.host is set, else in process)."),
        Setting("cache.operations", "list", sorted(CACHEABLE_OPERATIONS),
                "Operations whose answers are cached: any of chat.complete, fim.complete, "
                "embeddings.create.", check=_check_operations),
        Setting("cache.keys", "list", [],
                "Sidecar key ids whose requests use the cache; empty: every caller's."),
        Setting("cache.ttl_seconds", "int", 300,
                "How long a stored answer is served.", minimum=1),
        Setting("cache.max_entries", "int", 1000,
                "Most answers kept (per process in memory, or in all of Redis); the least "
                "recently used (in Redis the oldest stored) make room.", minimum=1),
        Setting("cache.max_entry_bytes", "int", 256 * 1024,
                "Largest answer (its JSON) the cache keeps; larger ones are never stored.",
                minimum=1),
    ]


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Resolved ``cache.*`` settings."""

    operations: frozenset[str]
    keys: frozenset[str]
    ttl: float
    max_entries: int
    max_entry_bytes: int

    @classmethod
    def from_settings(cls, values: Settings) -> CacheConfig:
        """Read the ``cache.*`` settings."""
        return cls(operations=frozenset(values["cache.operations"]),
                   keys=frozenset(values["cache.keys"]),
                   ttl=float(values["cache.ttl_seconds"]),
                   max_entries=int(values["cache.max_entries"]),
                   max_entry_bytes=int(values["cache.max_entry_bytes"]))
