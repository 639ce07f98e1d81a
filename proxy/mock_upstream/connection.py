"""Noticing a departed client and tearing connections down on purpose.

aiohttp does not cancel handlers when the client disconnects (unless the server was
started with ``handler_cancellation=True``), so waits here poll the transport.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .state import STATE_KEY

_POLL_S = 0.02
CUT_AFTER_FRAMES = web.RequestKey("mock_upstream_cut_after_frames", int)


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


class ConnectionDropped(Exception):
    """The mock closed the connection on purpose (``drop``/``cut_stream`` faults)."""


def client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def sleep_unless_gone(request: web.Request, seconds: float) -> None:
    """Sleep ``seconds``; raise :class:`ClientGone` as soon as the client disconnects.

    If the app starts shutting down meanwhile, the connection is dropped instead so that
    shutdown does not wait for long artificial delays.
    """
    closing = request.app[STATE_KEY].closing
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if client_gone(request):
            raise ClientGone
        if closing.is_set():
            abort(request)
            raise ConnectionDropped
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, _POLL_S))


async def wait_until_gone(request: web.Request) -> None:
    """Never answer: wait until the client leaves (or the app shuts down), then give up."""
    closing = request.app[STATE_KEY].closing
    while not client_gone(request):
        if closing.is_set():
            abort(request)
            raise ConnectionDropped
        await asyncio.sleep(_POLL_S)
    raise ClientGone


def abort(request: web.Request) -> None:
    """Close the connection immediately, discarding anything not yet sent."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def close_after_flush(request: web.Request) -> None:
    """Close the connection once already-written bytes are flushed (no more will follow)."""
    transport = request.transport
    if transport is not None:
        transport.close()
