"""One Redis server as the limiter and the budgets reach it: a redis-py client for health
checks and scripts, and the pipelined connection (:mod:`plugins.ratelimit.resp`) for the
commands sent on every request."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plugins.ratelimit.resp import RespConnection

__all__ = ["RedisLink", "failure_reason", "redis_client"]


def redis_client(host: str, port: int, *, connect_timeout: float, password: str = "",
                 db: int = 0) -> Redis:
    """A ``redis.asyncio`` client for health checks and script loading.

    No retries: the caller's fallback decides what a failure means, and a retry loop inside
    the client would only stretch the wait. Connecting is bounded by ``connect_timeout``;
    callers bound each call as a whole.
    """
    return Redis(host=host, port=port, db=db, password=password or None,
                 socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0))


def failure_reason(exc: BaseException) -> str:
    """What a failed Redis call was: ``timeout``, ``unreachable`` or ``error``."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timeout"
    if isinstance(exc, OSError | RedisConnectionError):
        return "unreachable"
    return "error"


class RedisLink:
    """A Redis server: :attr:`client` (redis-py) and one pipelined connection, opened when
    first needed. ``connect_timeout`` bounds a connect that callers gave up waiting for, so
    a slow one can still serve later calls; callers bound each call with their deadline."""

    def __init__(self, host: str, port: int, *, timeout: float, password: str = "",
                 db: int = 0, connect_timeout: float = 1.0) -> None:
        self.host, self.port, self.db = host, port, db
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._password = password
        self.client = redis_client(host, port, connect_timeout=connect_timeout,
                                   password=password, db=db)
        self._pipeline: RespConnection | None = None
        self._connecting: asyncio.Task[RespConnection] | None = None

    async def pipeline(self, deadline: float) -> RespConnection:
        """The pipelined connection, opened before the loop time ``deadline`` if need be."""
        pipeline = self._pipeline
        if pipeline is None or pipeline.closed:
            async with asyncio.timeout_at(deadline):
                pipeline = await self._connection()
        return pipeline

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

    async def close(self) -> None:
        """Close the pipelined connection and the client."""
        if self._connecting is not None:
            self._connecting.cancel()
        if self._pipeline is not None:
            self._pipeline.abort()
            self._pipeline = None
        await self.client.aclose()
