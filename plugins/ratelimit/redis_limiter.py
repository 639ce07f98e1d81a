"""The shared limiter: one atomic Lua script per decision, on Redis's own clock.

Every replica runs the same script against the same keys, so a limit holds across all of them
exactly: the script reads the TATs, decides, writes and sets each key's expiry in one step that
no other client can interleave with. Redis ``TIME`` is the clock, so replicas with skewed
clocks still agree. The arithmetic is :func:`plugins.ratelimit.gcra.decide`, in microseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from plugins.ratelimit.gcra import Decision, Limit, LimitState
from plugins.ratelimit.resp import RespConnection, RespError, encode

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
  if allowed == 1 and consume > 0 then
    tat = tat + consume * period
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


class RedisLimiter:
    """Evaluates limits with :data:`GCRA_SCRIPT` on Redis, each call bounded by ``timeout``.

    It owns two things, both opened lazily and closed by :meth:`close`: a ``redis.asyncio``
    client for the occasional commands (loading the script, health checks), and a pipelined
    :class:`~plugins.ratelimit.resp.RespConnection` for the decisions on the request path.
    Keys are ``prefix + limit.key``. A decision that gets no answer within ``timeout`` (to
    connect and to reply together) raises :class:`TimeoutError`; ``connect_timeout`` bounds
    a connect that callers gave up waiting for, so a slow one can still serve later calls.
    """

    def __init__(self, host: str, port: int, prefix: str, *, timeout: float = 0.05,
                 password: str = "", db: int = 0, connect_timeout: float = 1.0) -> None:
        self.host, self.port, self.db = host, port, db
        self.prefix = prefix
        self.timeout = timeout
        self._password = password
        self.connect_timeout = connect_timeout
        self.sha = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
        self.client: Any = _control_client(host, port, password, db, max(timeout, 1.0))
        self._pipeline: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None
        self._commands: dict[int, tuple[Sequence[Limit], bytes, list[bytes | str | int]]] = {}

    async def evaluate(self, limits: Sequence[Limit]) -> Decision:
        """Decide on ``limits`` atomically on Redis and record what the decision took."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        command, args = self._command(limits)
        pipeline = self._pipeline
        if pipeline is None or pipeline.closed:
            async with asyncio.timeout_at(deadline):
                pipeline = await self._connection()
        try:
            reply = await pipeline.send(command, deadline)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            reply = await pipeline.send(encode(b"EVAL", GCRA_SCRIPT, *args), deadline)
        if not isinstance(reply, list) or len(reply) != 2 + 2 * len(limits):
            raise RespError(f"unexpected reply to the rate-limit script: {reply!r}")
        if len(limits) == 1:  # the usual plan: a request limit alone
            states: tuple[LimitState, ...] = (LimitState(int(reply[2]), int(reply[3]) / 1e6),)
        else:
            states = tuple(LimitState(int(reply[2 * i + 2]), int(reply[2 * i + 3]) / 1e6)
                           for i in range(len(limits)))
        return Decision(bool(reply[0]), int(reply[1]) / 1e6, states)

    def _command(self, limits: Sequence[Limit]) -> tuple[bytes, list[bytes | str | int]]:
        # A caller's limits are the same on every request (its cached plan hands the same
        # tuple each time): encode its command once, found by identity, since hashing the
        # limits would cost more than it saves. The cache holds the tuple, so its id cannot
        # be reused by another object while the entry exists.
        cached = self._commands.get(id(limits))
        if cached is not None and cached[0] is limits:
            return cached[1], cached[2]
        args: list[bytes | str | int] = [len(limits)]
        args.extend(self.prefix + limit.key for limit in limits)
        for limit in limits:
            args.extend((limit.quota, limit.window * 1_000_000, limit.check, limit.consume))
        command = encode(b"EVALSHA", self.sha, *args)
        if isinstance(limits, tuple):
            if len(self._commands) >= 10_000:
                self._commands.clear()
            self._commands[id(limits)] = (limits, command, args)
        return command, args

    async def _connection(self) -> RespConnection:
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(self._connected)
        # Shielded: one caller giving up must not cancel the connect the others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> RespConnection:
        async with asyncio.timeout(self.connect_timeout):
            return await RespConnection.open(self.host, self.port, self.timeout,
                                             self._password, self.db)

    def _connected(self, task: asyncio.Task[RespConnection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._pipeline = task.result()

    async def load_script(self) -> None:
        """Make sure Redis has the script cached, so decisions need only its hash."""
        await self.client.script_load(GCRA_SCRIPT)

    async def ping(self) -> bool:
        """Whether Redis answers."""
        return bool(await self.client.ping())

    async def close(self) -> None:
        """Close the pipeline and the client."""
        if self._connecting is not None:
            self._connecting.cancel()
        if self._pipeline is not None:
            self._pipeline.abort()
            self._pipeline = None
        await self.client.aclose()


def _control_client(host: str, port: int, password: str, db: int, timeout: float) -> Any:
    options: dict[str, Any] = {}
    # Skip CLIENT SETINFO: two more round trips on every new connection.
    if "driver_info" in inspect.signature(Redis).parameters:
        options["driver_info"] = None
    else:
        options.update(lib_name=None, lib_version=None)
    # No client-side retries: the limiter's own timeout and fallback decide what a failure
    # means, and a retry loop inside the client would only stretch the wait.
    return Redis(host=host, port=port, db=db, password=password or None,
                 socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
                 health_check_interval=0, **options)
