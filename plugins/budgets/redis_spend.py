"""Counters in Redis, shared by every replica: one round trip to read, one to charge.

A counter is the integer key ``<prefix>budget:<budget id>:<period label>``, in nanos. A
request's budgets are read with one ``MGET``; a charge is ``INCRBY`` (atomic, so replicas
charging together lose nothing, and its reply is the new total, so exactly one replica sees
a threshold crossed) with ``EXPIREAT`` a day after the period ends, so old counters go by
themselves. A reservation (:mod:`~plugins.budgets.holds`) is ``INCRBY`` then ``MGET`` of
the spend and held counters, in one round trip. All go out on the rate limiter's pipelined
connection (:mod:`plugins.ratelimit.resp`, kept for its measured cost per call), a call's
commands together; a ``redis.asyncio`` client does the health checks. Every call is
bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from plugins.budgets.spend import Charge, Counter, SpendUnavailable
from plugins.ratelimit.redis_link import RedisLink, failure_reason
from plugins.ratelimit.resp import encode

__all__ = ["RedisSpend"]


def _unavailable(exc: BaseException) -> SpendUnavailable:
    return SpendUnavailable(failure_reason(exc), str(exc))


def _values(values: Any, count: int) -> list[int]:
    """The counters an ``MGET`` reply holds (0 for a missing key)."""
    if not isinstance(values, list) or len(values) != count:
        raise SpendUnavailable("error", f"unexpected reply to MGET: {values!r}")
    try:
        return [int(value) if value is not None else 0 for value in values]
    except (TypeError, ValueError):
        raise SpendUnavailable("error", "a budget counter is not an integer") from None


def _totals(replies: list[Any]) -> list[int]:
    """The new totals in the replies to ``INCRBY``/``EXPIREAT`` pairs."""
    totals = replies[0::2]
    if not all(isinstance(total, int) for total in totals):
        raise SpendUnavailable("error", f"unexpected reply to INCRBY: {totals!r}")
    return [int(total) for total in totals]


class RedisSpend:
    """:class:`~plugins.budgets.spend.SpendBackend` on Redis (see the module docstring).

    A call that gets no answer within ``timeout`` seconds (to connect and to reply
    together) fails with reason ``timeout``; ``connect_timeout`` bounds a connect callers
    gave up waiting for, so that a slow one can still serve later calls.
    """

    name = "redis"

    def __init__(self, host: str, port: int, prefix: str, *, timeout: float,
                 password: str = "", db: int = 0, connect_timeout: float = 1.0) -> None:
        self.prefix = prefix + "budget:"
        self.timeout = timeout
        self.link = RedisLink(host, port, timeout=timeout, password=password, db=db,
                              connect_timeout=connect_timeout)

    def key(self, counter: Counter) -> str:
        """The Redis key of ``counter``."""
        return f"{self.prefix}{counter.budget_id}:{counter.label}"

    async def read(self, counters: Sequence[Counter]) -> list[int]:
        """``MGET`` of every counter."""
        reply = await self._send([self._mget(counters)])
        return _values(reply[0], len(counters))

    async def charge(self, charges: Sequence[Charge]) -> list[int]:
        """``INCRBY`` and ``EXPIREAT`` for each charge, sent together."""
        replies = await self._send(self._increments(charges))
        return _totals(replies)

    async def reserve(self, charges: Sequence[Charge], counters: Sequence[Counter]
                      ) -> list[int]:
        """``INCRBY`` and ``EXPIREAT`` for each charge, then ``MGET`` of ``counters``, sent
        together: Redis runs one connection's commands in order, so the read sees these
        charges and every charge any replica made before them."""
        replies = await self._send([*self._increments(charges), self._mget(counters)])
        _totals(replies[:-1])
        return _values(replies[-1], len(counters))

    def _mget(self, counters: Sequence[Counter]) -> bytes:
        return encode(b"MGET", *(self.key(c) for c in counters))

    def _increments(self, charges: Sequence[Charge]) -> list[bytes]:
        commands = []
        for charge in charges:
            key = self.key(charge.counter)
            commands.append(encode(b"INCRBY", key, charge.amount))
            commands.append(encode(b"EXPIREAT", key, charge.counter.expires_at))
        return commands

    async def _send(self, commands: list[bytes]) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            pipeline = await self.link.pipeline(deadline)
            futures = [pipeline.send(command, deadline) for command in commands]
            return list(await asyncio.gather(*futures))
        except (TimeoutError, RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def check(self) -> None:
        """``PING`` Redis (the caller bounds the wait)."""
        try:
            await self.link.client.ping()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        """Close the connections."""
        await self.link.close()
