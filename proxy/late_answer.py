"""The answer to a billed call whose caller hung up while upstream was working on it.

A JSON call (chat, FIM, embeddings, an agent or conversation turn without a stream) that
reached upstream is billed by upstream whether or not anyone reads its answer: upstream
generates it all the same. When its caller hangs up first, the sidecar lets that one
upstream exchange finish (no retry, no fallback: those stop with the caller) and reads the
answer's usage, so that budgets, the token limit and usage records count what upstream
bills, exactly, instead of an estimate of the prompt alone. Streams are not kept going:
closing a stream stops its generation, and what was relayed is estimated
(:mod:`proxy.estimate`). Callers that leave hold at most a quarter of the upstream
connections (``upstream.max_connections``) this way, so that leaving is no way around the
concurrency caps; past that, the exchange goes with its caller and is estimated.

What it costs: the exchange of every billed JSON call runs in a task of its own, shielded
from the handler's cancellation, so that it can outlive its caller. Measured with
``load_tests/bench_ab.py`` on the chat benchmark (whole default chain, 10 rounds): +2.0 %
CPU per request (+3.1 % instructions). The alternative, charging a hung-up call its prompt
and its whole possible output (``max_tokens``), overcharges every client whose own timeout
fires, and still records a guess where upstream's bill has a number.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aiohttp

from proxy.context import RequestContext

__all__ = ["LateAnswer", "discard", "keeps_going", "read_late_answer"]


@dataclass(frozen=True, slots=True)
class LateAnswer:
    """An upstream exchange still running for a caller that left: the task that gives its
    response, and the loop time by which its status and headers are due."""

    exchange: asyncio.Future[aiohttp.ClientResponse]
    headers_due: float


def keeps_going(ctx: RequestContext) -> bool:
    """Whether ``ctx``'s upstream exchange should finish after its caller hung up: a JSON
    call upstream bills by usage, not a stream."""
    operation = ctx.operation
    return (operation is not None and operation.reports_usage and not ctx.is_stream
            and ctx.body is not None)


async def read_late_answer(ctx: RequestContext, late: LateAnswer, deadline: float,
                           closing: asyncio.Event, max_bytes: int) -> None:
    """Wait for the answer ``late`` will give (its headers until ``late.headers_due``, its
    body until the loop time ``deadline``), or until ``closing`` is set (the sidecar shuts
    down), and keep what it says on ``ctx``: upstream's status and, for a successful JSON
    answer of at most ``max_bytes``, its body (its usage). What cannot be read leaves
    ``ctx`` to the estimate."""
    pending = late.exchange
    raw: aiohttp.ClientResponse | None = None
    stop: asyncio.Future[Any] = asyncio.ensure_future(closing.wait())
    try:
        async with asyncio.timeout_at(min(deadline, late.headers_due)) as timer:
            waited: list[asyncio.Future[Any]] = [pending, stop]
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if pending not in done or pending.exception() is not None:
                return
            raw = pending.result()
            ctx.upstream_status = raw.status
            length = raw.content_length
            if 200 <= raw.status < 300 and length is not None and length <= max_bytes:
                timer.reschedule(deadline)
                ctx.set_response_body(await raw.read())
    except (TimeoutError, aiohttp.ClientError, OSError):
        return
    finally:
        stop.cancel()
        if raw is not None:
            raw.close()
        else:
            discard(pending)


def discard(pending: asyncio.Future[aiohttp.ClientResponse]) -> None:
    """Give up on an upstream exchange: cancel it, or close the answer it already has."""
    if not pending.done():
        pending.cancel()
        return
    with contextlib.suppress(BaseException):
        # Retrieved, so that a failure nobody waited for is not reported as lost.
        pending.result().close()
