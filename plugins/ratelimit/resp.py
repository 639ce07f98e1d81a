"""A pipelined Redis connection for the limiter's hot path, kept because it is measured.

Every request makes one rate-limit decision, one ``EVALSHA``. This connection keeps every
command on one socket and writes them in batches: while one batch awaits its replies, new
commands gather, and go out together when the last reply is in (so a quiet sidecar sends at
once, and a busy one makes one write and one read per batch instead of per command). Replies are
matched to their callers first in, first out, and the parser reads only the reply shapes the
limiter uses.

Why not ``redis.asyncio``: sending the decisions through redis-py instead, the whole default
chain (PostgreSQL, Redis, JSON access logs; 32 connections, wrk) used this much more sidecar
CPU per request than with this connection, measured with ``load_tests/bench_ab.py`` (20
rounds each: median of the per-round ratios, 95 % interval; redis-py 8.2, hiredis 3.5 where
named; December 2026, 2 shared cores):

==========================================================  ==========================
how the decision went through redis-py                       more CPU per request
==========================================================  ==========================
``register_script``, one ``EVALSHA`` per decision, pooled    +30.3 % (+28.4 to +31.6)
the same with hiredis                                        +27.5 % (+25.9 to +28.7)
one ``Pipeline`` per event-loop turn, hiredis                +11.1 % (+8.6 to +12.6)
one reused ``Pipeline`` at a time, one deadline, hiredis     +9.3 % (+8.1 to +10.0)
batches on one ``redis.asyncio.Connection``, hiredis         +7.7 % (+6.9 to +8.4)
==========================================================  ==========================

Each is over the project's 5 % bar for keeping a hand-written client. The cost is in redis-py's
layers around each write and each reply (connection checkout, retry and instrumentation
wrappers, a coroutine per reply), not in parsing: hiredis takes off two to four points.
redis-py does everything else: start-up and health checks, loading the script again after
``NOSCRIPT``, and the error classes this connection raises (``ResponseError`` and
``NoScriptError`` for error replies, ``ConnectionError``, ``TimeoutError``).

Replies have a deadline, watched by one timer per connection rather than a timeout per call
(which would cost more than the rest of the call). When the oldest reply is overdue the
connection is dropped: with replies matched by order, a connection that lost one cannot be
trusted for the next. Every command then in flight fails with ``TimeoutError``, and the next
call connects afresh.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Reply = int | bytes | list[Any] | None


def _error_reply(line: bytes) -> ResponseError:
    message = line.decode(errors="replace")
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


def encode(*args: bytes | str | int) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    """The buffer ends in the middle of a reply."""


def _parse(buffer: bytes, pos: int) -> tuple[Reply | ResponseError, int]:
    """One reply starting at ``pos``: ``(value, position after it)``; raises _Incomplete."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[pos:pos + 1], buffer[pos + 1:end]
    pos = end + 2
    if kind == b":":
        return int(line), pos
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return _error_reply(line), pos
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, pos
        if len(buffer) < pos + length + 2:
            raise _Incomplete
        return buffer[pos:pos + length], pos + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        items: list[Any] = []
        for _ in range(count):
            if buffer[pos:pos + 1] == b":":
                # Integers, the rate-limit script's whole reply, without a call for each.
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    raise _Incomplete
                items.append(int(buffer[pos + 1:end]))
                pos = end + 2
                continue
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    raise RedisConnectionError(f"unexpected reply type {kind!r} from Redis")


class RespConnection(asyncio.Protocol):
    """One socket to Redis with any number of commands in flight."""

    def __init__(self, reply_timeout: float) -> None:
        self.reply_timeout = reply_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiting: deque[tuple[asyncio.Future[Reply], float]] = deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._unanswered = 0  # replies still due for the batch last written
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, reply_timeout: float, password: str = "",
                   db: int = 0) -> RespConnection:
        """Connect, authenticate and select the database (the caller bounds the connect)."""
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(
            lambda: cls(reply_timeout), host, port)
        try:
            if password:
                await connection.call(b"AUTH", password)
            if db:
                await connection.call(b"SELECT", db)
        except BaseException:
            connection.abort()
            raise
        return connection

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Hand every complete reply to the command waiting longest."""
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        try:
            while pos < len(buffer):
                try:
                    reply, pos = _parse(buffer, pos)
                except _Incomplete:
                    break
                if not self._waiting:
                    raise RedisConnectionError("reply from Redis that nobody asked for")
                future, _deadline = self._waiting.popleft()
                self._unanswered -= 1
                if not future.done():
                    if isinstance(reply, ResponseError):
                        _set_error(future, reply)
                    else:
                        future.set_result(reply)
        except (RedisConnectionError, ValueError) as exc:
            self._fail(RedisConnectionError(f"bad reply from Redis: {exc}"))
            return
        self._buffer = buffer[pos:]
        if self._unanswered <= 0 and self._outgoing and not self._flush_scheduled:
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every command still waiting."""
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    # --- commands ----------------------------------------------------------------------

    def call(self, *args: bytes | str | int) -> asyncio.Future[Reply]:
        """Send a command (with others of this event-loop turn); the future gets its reply."""
        return self.send(encode(*args))

    def send(self, command: bytes, deadline: float | None = None) -> asyncio.Future[Reply]:
        """Like :meth:`call` with a command already encoded by :func:`encode`, and optionally
        a ``deadline`` (event-loop time) earlier than the connection's reply timeout."""
        loop = self._loop
        future: asyncio.Future[Reply] = loop.create_future()
        if self.closed:
            _set_error(future, RedisConnectionError("connection to Redis is closed"))
            return future
        if deadline is None:
            deadline = loop.time() + self.reply_timeout
        if not self._waiting and self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadlines)
        self._waiting.append((future, deadline))
        self._outgoing.append(command)
        if self._unanswered <= 0 and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _check_deadlines(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if deadline <= self._loop.time():
            self._fail(RedisTimeoutError("no reply from Redis in time"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_deadlines)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._outgoing and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._outgoing))
            self._unanswered = len(self._outgoing)
        self._outgoing.clear()

    def abort(self) -> None:
        """Drop the connection now; commands in flight fail."""
        if self._transport is not None:
            self._transport.abort()
        self._fail(RedisConnectionError("connection to Redis aborted"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()
        waiting, self._waiting = self._waiting, deque()
        for future, _deadline in waiting:
            if not future.done():
                _set_error(future, error)
        self._outgoing.clear()
        self._buffer = b""


def _set_error(future: asyncio.Future[Reply], error: Exception) -> None:
    future.set_exception(error)
    # A caller that gave up (timed out) never awaits its future; that is expected, not a bug
    # for asyncio to report at garbage collection. A caller still waiting gets the error.
    future.exception()
