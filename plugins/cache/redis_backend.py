"""The shared store: entries in Redis, so every replica answers from the same cache.

Each entry is one string key ``<prefix>cache:<key>`` written with ``SET ... PX <ttl>``, so Redis
drops it on its own. A sorted set ``<prefix>cache:index`` lists the keys by the time they were
stored; the script that stores an entry also drops the oldest beyond ``max_entries``, in the
same atomic step. Lookups are a plain ``GET``.

A cache must never make a request slower or fail it: every call is bounded by ``timeout``,
and after a failure the store is left alone for ``rest`` seconds (lookups are misses at once)
before one request tries it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plugins.cache.backend import BackendUnavailable
from plugins.cache.entry import Entry, decode, encode

__all__ = ["STORE_SCRIPT", "RedisBackend"]

# KEYS: the entry, the index. ARGV: the encoded entry, its time to live (ms), max entries.
# Returns how many old entries it dropped.
STORE_SCRIPT = """
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  for _, key in ipairs(oldest) do redis.call('DEL', key) end
else
  over = 0
end
redis.call('PEXPIRE', KEYS[2], ttl)
return over
"""


class RedisBackend:
    """:class:`~plugins.cache.backend.Backend` on Redis (see the module's docstring)."""

    name = "redis"

    def __init__(self, host: str, port: int, prefix: str, *, max_entries: int,
                 timeout: float, rest: float = 1.0, password: str = "", db: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix + "cache:"
        self.index = self.prefix + "index"
        self.max_entries = max_entries
        self.timeout = timeout
        self.rest = rest
        self.clock = clock
        # No retries inside the client: a retry loop would only stretch the wait that
        # ``timeout`` bounds; the next request is the retry.
        self.client = Redis(host=host, port=port, db=db, password=password or None,
                            socket_connect_timeout=max(timeout, 1.0),
                            retry=Retry(NoBackoff(), 0))
        self.script = self.client.register_script(STORE_SCRIPT)
        self._resting_until = 0.0
        self.last_error: str | None = None

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, or ``None``; :class:`BackendUnavailable` on failure."""
        raw = await self._call(self.client.get(self.prefix + key))
        return decode(raw) if isinstance(raw, bytes) else None

    async def put(self, key: str, entry: Entry, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds and trim the oldest beyond ``max_entries``."""
        if self.max_entries <= 0:
            return
        await self._call(self.script(keys=[self.prefix + key, self.index],
                                     args=[encode(entry), max(1, int(ttl * 1000)),
                                           self.max_entries]))

    async def _call(self, call: Any) -> Any:
        if self.clock() < self._resting_until:
            call.close()
            raise BackendUnavailable("resting")
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except (TimeoutError, RedisError, OSError) as exc:
            self._resting_until = self.clock() + self.rest
            failure = _failure(exc)
            self.last_error = failure.reason
            raise failure from None

    async def health(self) -> dict[str, Any]:
        """Whether Redis answers a ``PING`` in time (a cache outage never makes the sidecar
        unready: ``ok`` stays true, ``redis`` says how it is)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            return {"ok": True, "redis": False, "error": _failure(exc).reason}
        return {"ok": True, "redis": True}

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


def _failure(exc: BaseException) -> BackendUnavailable:
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return BackendUnavailable("timeout", str(exc))
    if isinstance(exc, OSError | RedisConnectionError):
        return BackendUnavailable("unreachable", str(exc))
    return BackendUnavailable("error", str(exc))
