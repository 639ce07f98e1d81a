"""The shared backend: one atomic Lua script per decision, on Redis's own clock.

Every replica runs the same script against the same keys, so a limit holds across all of them
exactly: the script reads the TATs, decides, writes and sets each key's expiry in one step that
no other client can interleave with. Redis ``TIME`` is the clock, so replicas with skewed
clocks still agree. The arithmetic is :func:`plugins.ratelimit.gcra.decide`, in microseconds.

Decisions go out as ``EVALSHA`` of the script registered with redis-py (``register_script``)
on the pipelined connection of :mod:`plugins.ratelimit.resp` (why it exists is measured
there). Everything else goes through a ``redis.asyncio`` client (:mod:`.redis_link`): health
checks, and the decision that meets ``NOSCRIPT`` (Redis restarted, failed over or flushed its
scripts), which redis-py's script support loads again and retries. redis-py's errors become
:class:`~plugins.ratelimit.limiter.BackendUnavailable` here, so the rest of the plugin knows
nothing of Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from plugins.ratelimit.gcra import Decision, Limit, LimitState
from plugins.ratelimit.limiter import BackendUnavailable
from plugins.ratelimit.redis_link import RedisLink, failure_reason
from plugins.ratelimit.resp import encode

# KEYS[i]: one bucket per limit. ARGV: four numbers per limit: quota, window (us), units that
# must be available (0 = no check), units to take if every limit passes.
# Returns {allowed, retry_us, remaining_1, reset_us_1, remaining_2, reset_us_2, ...}.
GCRA_SCRIPT = """
redis.replicate_commands()
local clock = redis.call('TIME')
-- Microseconds since 2023-11-14: small enough for a double to keep sub-microsecond steps.
local now = (tonumber(clock[1]) - 1700000000) * 1000000 + tonumber(clock[2])
local eps = 1
local n = #KEYS
local bases, periods = {}, {}
local allowed, retry = 1, 0
for i = 1, n do
  local quota = tonumber(ARGV[4 * i - 3])
  local window = tonumber(ARGV[4 * i - 2])
  local check = tonumber(ARGV[4 * i - 1])
  local period = window / quota
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  bases[i], periods[i] = tat, period
  if check > 0 then
    local wait = tat - now + check * period - window
    if wait > eps then
      allowed = 0
      if wait > retry then retry = wait end
    end
  end
end
local out = {allowed, math.ceil(retry)}
for i = 1, n do
  local window = tonumber(ARGV[4 * i - 2])
  local consume = tonumber(ARGV[4 * i])
  local period = periods[i]
  local tat = bases[i]
  if allowed == 1 and consume ~= 0 then
    tat = tat + consume * period
    if tat < now then tat = now end
    local ttl = math.max(1, math.ceil((tat - now) / 1000))
    redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', ttl)
  end
  local used = tat - now
  local remaining = math.floor((window - used + eps) / period)
  local reset = 0
  if used > eps then
    reset = used - (window - (remaining + 1) * period)
    if reset < 0 then reset = 0 end
  end
  out[2 * i + 1] = remaining
  out[2 * i + 2] = math.ceil(reset)
end
return out
"""


def unavailable(exc: BaseException) -> BackendUnavailable:
    """What a failed Redis call means for the limiter (``timeout``, ``unreachable``, ``error``)."""
    return BackendUnavailable(failure_reason(exc), str(exc))


class RedisLimiter:
    """:class:`~plugins.ratelimit.limiter.Limiter` on Redis with :data:`GCRA_SCRIPT`.

    Keys are ``prefix + limit.key``. A decision that gets no answer within ``timeout`` seconds
    (to connect and to reply together) fails with reason ``timeout``; ``connect_timeout``
    bounds a connect that callers gave up waiting for, so a slow one can still serve later
    calls. Connections open when first needed and close in :meth:`close`.
    """

    def __init__(self, host: str, port: int, prefix: str, *, timeout: float,
                 password: str = "", db: int = 0, connect_timeout: float = 1.0) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self.link = RedisLink(host, port, timeout=timeout, password=password, db=db,
                              connect_timeout=connect_timeout)
        self.script = self.link.client.register_script(GCRA_SCRIPT)

    async def evaluate(self, limits: Sequence[Limit]) -> Decision:
        """Decide on ``limits`` atomically on Redis and record what the decision took."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        keys = [self.prefix + limit.key for limit in limits]
        args: list[int] = []
        for limit in limits:
            args.extend((limit.quota, limit.window * 1_000_000, limit.check, limit.consume))
        try:
            pipeline = await self.link.pipeline(deadline)
            try:
                reply: Any = await pipeline.send(
                    encode(b"EVALSHA", self.script.sha, len(keys), *keys, *args), deadline)
            except NoScriptError:
                async with asyncio.timeout_at(deadline):
                    reply = await self.script(keys=keys, args=args)
        except (TimeoutError, RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        if not isinstance(reply, list) or len(reply) != 2 + 2 * len(limits):
            raise BackendUnavailable("error", f"unexpected reply to the script: {reply!r}")
        states = tuple(LimitState(int(reply[2 * i + 2]), int(reply[2 * i + 3]) / 1e6)
                       for i in range(len(limits)))
        return Decision(bool(reply[0]), int(reply[1]) / 1e6, states)

    async def check(self) -> None:
        """PING Redis (the caller bounds the wait)."""
        try:
            await self.link.client.ping()
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    async def close(self) -> None:
        """Close the connections."""
        await self.link.close()
