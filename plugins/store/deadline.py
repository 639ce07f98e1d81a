"""Waiting for database work with a deadline that really holds.

``asyncio.timeout`` around a psycopg query is not enough: on cancellation psycopg tries to
cancel the query on the server and then waits for the connection to settle (up to 5 s each),
so against a database that stopped answering (a black hole) the caller is released seconds
after its deadline. :func:`within` releases the caller at the deadline and lets the cancelled
work finish its clean-up in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

#: Abandoned work still cleaning up (a strong reference, so it is not collected mid-way).
_ABANDONED: set[asyncio.Future[Any]] = set()


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_settled)


def _settled(task: asyncio.Future[Any]) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody awaits it any more


async def within(work: Awaitable[T], seconds: float) -> T:
    """The result of ``work``, or :class:`TimeoutError` once ``seconds`` have passed.

    On timeout (or when the caller is cancelled) ``work`` is cancelled but not waited for.
    """
    task = asyncio.ensure_future(work)
    try:
        # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the work
        # finishes, and a task that cannot be cancelled hangs shutdown.
        async with asyncio.timeout(seconds):
            return await asyncio.shield(task)
    except BaseException:
        if not task.done():
            _abandon(task)
        raise

