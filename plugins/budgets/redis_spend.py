"""Counters in Redis, shared by every replica: one round trip to read, one to charge.

A counter is the integer key ``<prefix>budget:<budget id>:<period label>``, in nanos. A
request's budgets are read with one ``MGET``; a charge is ``INCRBY`` (atomic, so replicas
charging together lose nothing, and its reply is the new total, so exactly one replica sees
a threshold crossed) with ``EXPIREAT`` a day after the period ends, so old counters go by
themselves. Both go out together on the rate limiter's pipelined connection
(:mod:`plugins.ratelimit.resp`, kept for its measured cost per call); a ``redis.asyncio``
client does the health checks. Every call is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plugins.budgets.spend import Charge, Counter, SpendUnavailable
from plugins.ratelimit.redis_limiter import redis_client
from plugins.ratelimit.resp import RespConnection, encode

__all__ = ["RedisSpend"]


def _unavailable(exc: BaseException) -> SpendUnavailable:
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        reason = "timeout"
    elif isinstance(exc, OSError | RedisConnectionError):
        reason = "unreachable"
    else:
        reason = "error"
    return SpendUnavailable(reason, str(exc))


class RedisSpend:
    """:class:`~plugins.budgets.spend.SpendBackend` on Redis (see the module docstring).

    A call that gets no answer within ``timeout`` seconds (to connect and to reply
    together) fails with reason ``timeout``; ``connect_timeout`` bounds a connect callers
    gave up waiting for, so that a slow one can still serve later calls.
    """

    name = "redis"

    def __init__(self, host: str, port: int, prefix: str, *, timeout: float,
                 password: str = "", db: int = 0, connect_timeout: float = 1.0) -> None:
        self.host, self.port, self.db = host, port, db
        self.prefix = prefix + "budget:"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._password = password
        self.client = redis_client(host, port, connect_timeout=connect_timeout,
                                   password=password, db=db)
        self._pipeline: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None

    def key(self, counter: Counter) -> str:
        """The Redis key of ``counter``."""
        return f"{self.prefix}{counter.budget_id}:{counter.label}"

    async def read(self, counters: Sequence[Counter]) -> list[int]:
        """``MGET`` of every counter."""
        reply = await self._send([encode(b"MGET", *(self.key(c) for c in counters))])
        values = reply[0]
        if not isinstance(values, list) or len(values) != len(counters):
            raise SpendUnavailable("error", f"unexpected reply to MGET: {values!r}")
        try:
            return [int(value) if value is not None else 0 for value in values]
        except (TypeError, ValueError):
            raise SpendUnavailable("error", "a budget counter is not an integer") from None

    async def charge(self, charges: Sequence[Charge]) -> list[int]:
        """``INCRBY`` and ``EXPIREAT`` for each charge, sent together."""
        commands = []
        for charge in charges:
            key = self.key(charge.counter)
            commands.append(encode(b"INCRBY", key, charge.amount))
            commands.append(encode(b"EXPIREAT", key, charge.counter.expires_at))
        replies = await self._send(commands)
        totals = replies[0::2]
        if not all(isinstance(total, int) for total in totals):
            raise SpendUnavailable("error", f"unexpected reply to INCRBY: {totals!r}")
        return [int(total) for total in totals]

    async def _send(self, commands: list[bytes]) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            pipeline = self._pipeline
            if pipeline is None or pipeline.closed:
                async with asyncio.timeout_at(deadline):
                    pipeline = await self._connection()
            futures = [pipeline.send(command, deadline) for command in commands]
            return list(await asyncio.gather(*futures))
        except (TimeoutError, RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

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

    async def check(self) -> None:
        """``PING`` Redis (the caller bounds the wait)."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        """Close the pipelined connection and the client."""
        if self._connecting is not None:
            self._connecting.cancel()
        if self._pipeline is not None:
            self._pipeline.abort()
            self._pipeline = None
        await self.client.aclose()
