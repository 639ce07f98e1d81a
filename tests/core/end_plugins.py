"""Plugins for the end-of-request tests (``tests.core.end_plugins:NAME``): one that counts the
``on_end`` notifications of each request, and ones that raise where the header says."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.sse import SSEEvent

ENDS = web.AppKey("end_counts", Counter)
OUTCOMES = web.AppKey("end_outcomes", dict)


class Counting:
    """Counts ``on_end`` per request id and keeps the outcome and error code; its end is
    slow (it awaits), so a caller that hangs up meets it mid-way."""

    @hookimpl
    def startup(self, app: web.Application) -> None:
        app[ENDS] = Counter()
        app[OUTCOMES] = {}

    @hookimpl
    def on_end(self, ctx: RequestContext) -> Any:
        async def count() -> None:
            await asyncio.sleep(0.05)
            ctx.app[ENDS][ctx.request_id] += 1
            ctx.app[OUTCOMES][ctx.request_id] = (
                str(ctx.outcome), ctx.error.code if ctx.error else None)

        return count()


class Raising:
    """Raises ``ValueError`` in the hook named by the ``X-Raise-In`` request header."""

    @staticmethod
    def _maybe(ctx: RequestContext, hook: str) -> None:
        if ctx.request.headers.get("X-Raise-In") == hook:
            raise ValueError(f"a bug in {hook}")

    @hookimpl
    def on_request(self, ctx: RequestContext) -> None:
        self._maybe(ctx, "on_request")

    @hookimpl
    def wrap_upstream(self, ctx: RequestContext, call: UpstreamCall) -> UpstreamCall:
        async def wrapped(c: RequestContext) -> UpstreamResponse:
            self._maybe(c, "wrap_upstream")
            return await call(c)

        return wrapped

    @hookimpl
    def on_response(self, ctx: RequestContext, response: UpstreamResponse) -> None:
        self._maybe(ctx, "on_response")

    @hookimpl
    def on_stream_event(self, ctx: RequestContext, event: SSEEvent) -> None:
        self._maybe(ctx, "on_stream_event")

    @hookimpl
    def on_end(self, ctx: RequestContext) -> None:
        self._maybe(ctx, "on_end")


counting = Counting()
raising = Raising()
