"""The pipelined Redis connection against a scripted peer: replies split anywhere, replies
matched in order, errors per command, and the reply deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plugins.ratelimit.resp import RespConnection

Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
PeerFactory = Callable[[Peer], Awaitable[int]]


@pytest.fixture
async def peer_port() -> AsyncIterator[PeerFactory]:
    """Start a scripted peer on a free port (closed after the test); returns the port."""
    servers: list[asyncio.Server] = []

    async def start(handler: Peer) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


async def read_commands(reader: asyncio.StreamReader, count: int) -> None:
    """Consume ``count`` RESP commands (arrays of bulk strings)."""
    for _ in range(count):
        header = await reader.readline()
        for _ in range(int(header[1:])):
            length = int((await reader.readline())[1:])
            await reader.readexactly(length + 2)


async def test_replies_split_byte_by_byte_reach_the_right_callers(peer_port: PeerFactory) -> None:
    replies = (b":42\r\n", b"$5\r\nhello\r\n", b"$-1\r\n", b"*3\r\n:1\r\n:-2\r\n$1\r\nx\r\n",
               b"-ERR wrong\r\n", b"+OK\r\n", b"*0\r\n", b"-NOSCRIPT No matching script\r\n")

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_commands(reader, len(replies))
        for byte in b"".join(replies):
            writer.write(bytes([byte]))
            await writer.drain()
        await reader.read()

    port = await peer_port(peer)
    connection = await RespConnection.open("127.0.0.1", port, reply_timeout=5.0)
    futures = [connection.call(b"CMD", i) for i in range(len(replies))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[:4] == [42, b"hello", None, [1, -2, b"x"]]
    # Error replies are redis-py's errors, NOSCRIPT its own class, as redis-py raises them.
    assert type(results[4]) is ResponseError and str(results[4]) == "ERR wrong"
    assert results[5:7] == [b"OK", []]
    assert isinstance(results[7], NoScriptError)
    connection.abort()


async def test_an_overdue_reply_drops_the_connection_and_fails_everything_in_flight(
        peer_port: PeerFactory) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    port = await peer_port(silent)
    connection = await RespConnection.open("127.0.0.1", port, reply_timeout=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first, second = connection.call(b"PING"), connection.call(b"PING")
    with pytest.raises(RedisTimeoutError):
        await first
    assert 0.05 <= loop.time() - started < 1.0
    with pytest.raises(RedisTimeoutError):
        await second
    assert connection.closed
    with pytest.raises(RedisConnectionError):
        await connection.call(b"PING")


async def test_a_peer_closing_fails_the_commands_waiting(peer_port: PeerFactory) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_commands(reader, 1)
        writer.close()

    port = await peer_port(hang_up)
    connection = await RespConnection.open("127.0.0.1", port, reply_timeout=5.0)
    with pytest.raises(RedisConnectionError):
        await connection.call(b"PING")
