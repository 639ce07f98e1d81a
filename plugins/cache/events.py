"""The events the cache reports, declared for the logs and metrics plugins."""

from __future__ import annotations

from proxy.event_registry import EventMetric, EventSpec, Label

__all__ = ["BACKEND_ERROR", "EVENTS", "HIT", "MISS"]

HIT = "cache.hit"
MISS = "cache.miss"
BACKEND_ERROR = "cache.backend_error"

_LOOKUPS = "Requests the response cache considered, by operation and result (hit, miss)."

EVENTS = [
    EventSpec(HIT, "A request was answered from the response cache; upstream was not called "
              "and no tokens were counted.",
              fields=("operation", "backend"), level="DEBUG",
              metrics=(EventMetric("cache_lookups", _LOOKUPS,
                                   ("operation", Label("result", fixed="hit"))),)),
    EventSpec(MISS, "A request the response cache considered went upstream; reason: "
              "not_found, stale (older than the caller's max-age), no_cache (the caller "
              "skipped the lookup), sampling (temperature not 0, not forced), no_org (caller "
              "unknown), no_json (the body is not a JSON object), stream_only (stored from a "
              "stream, asked for JSON), unreadable, unavailable (the store failed or is "
              "resting after a failure).",
              fields=("operation", "reason"), level="DEBUG",
              metrics=(EventMetric("cache_lookups", _LOOKUPS,
                                   ("operation", Label("result", fixed="miss"))),
                       EventMetric("cache_misses", "Cache misses by operation and reason.",
                                   ("operation", "reason")))),
    EventSpec(BACKEND_ERROR, "The cache's Redis failed or did not answer within "
              "redis.timeout_ms; the lookup counted as a miss, or the answer was not stored. "
              "Redis is left alone for a second before it is tried again.",
              fields=("action", "reason"), level="WARNING",
              metrics=(EventMetric("cache_backend_errors",
                                   "Failed calls of the cache to its store, by action (get, "
                                   "put) and reason (timeout, unreachable, error).",
                                   ("action", "reason")),)),
]
