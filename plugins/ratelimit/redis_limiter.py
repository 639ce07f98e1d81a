"""The shared limiter: one atomic Lua script per decision, on Redis's own clock.

Every replica runs the same script against the same keys, so a limit holds across all of them
exactly: the script reads the TATs, decides, writes and sets each key's expiry in one step that
no other client can interleave with. Redis ``TIME`` is the clock, so replicas with skewed
clocks still agree. The arithmetic is :func:`plugins.ratelimit.gcra.decide`, in microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plugins.ratelimit.gcra import Decision, Limit, LimitState

# KEYS[i]: one bucket per limit. ARGV: four numbers per limit: quota, window (us), units that
# must be available (0 = no check), units to take if every limit passes.
# Returns {allowed, retry_us, remaining_1, reset_us_1, remaining_2, reset_us_2, ...}.
GCRA_SCRIPT = """
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
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
  if allowed == 1 and consume > 0 then
    tat = tat + consume * period
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000))
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


class RedisLimiter:
    """Evaluates limits with :data:`GCRA_SCRIPT` on a ``redis.asyncio`` client.

    Keys are ``prefix + limit.key``. The caller bounds each call with its own timeout; this
    class adds none, so it can be tested on its own.
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(GCRA_SCRIPT)

    async def evaluate(self, limits: Sequence[Limit]) -> Decision:
        """Decide on ``limits`` atomically on Redis and record what the decision took."""
        keys = [self.prefix + limit.key for limit in limits]
        args: list[int] = []
        for limit in limits:
            args.extend((limit.quota, limit.window * 1_000_000, limit.check, limit.consume))
        reply = await self._script(keys=keys, args=args)
        states = tuple(
            LimitState(int(reply[2 * i + 2]), int(reply[2 * i + 3]) / 1e6)
            for i in range(len(limits))
        )
        return Decision(bool(int(reply[0])), int(reply[1]) / 1e6, states)

    async def ping(self) -> bool:
        """Whether Redis answers."""
        return bool(await self.client.ping())
