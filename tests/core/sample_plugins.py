"""Plugins used by the chain tests, loaded by module path (``tests.core.sample_plugins:NAME``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy import STOP_OBSERVING, StopObserving, hookimpl
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.errors import SidecarError
from proxy.sse import SSEEvent

CALLS = web.AppKey("sample_calls", list)


class Recorder:
    """Records every hook it sees as ``(name, hook)`` on the app."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def startup(self, app: web.Application) -> None:
        app.setdefault(CALLS, [])  # type: ignore[arg-type]
        app[CALLS].append((self.name, "startup"))

    @hookimpl
    def shutdown(self, app: web.Application) -> None:
        app[CALLS].append((self.name, "shutdown"))

    @hookimpl
    def on_request(self, ctx: RequestContext) -> Any:
        async def record() -> None:
            ctx.app[CALLS].append((self.name, "on_request"))
            if ctx.request.headers.get("X-Reject-At") == self.name:
                raise SidecarError(403, f"rejected by {self.name}")
            if ctx.request.headers.get("X-Answer-At") == self.name:
                return web.json_response({"answered_by": self.name})  # type: ignore[return-value]
            return None

        return record()

    @hookimpl
    def wrap_upstream(self, ctx: RequestContext, call: UpstreamCall) -> UpstreamCall:
        async def wrapped(c: RequestContext) -> UpstreamResponse:
            c.app[CALLS].append((self.name, "wrap:before"))
            response = await call(c)
            c.app[CALLS].append((self.name, "wrap:after"))
            return response

        return wrapped

    @hookimpl
    def on_stream_event(self, ctx: RequestContext, event: SSEEvent) -> None:
        ctx.state.setdefault(self.name, []).append(event.event or "data")

    @hookimpl
    def on_end(self, ctx: RequestContext) -> None:
        if ctx.error is not None:
            ctx.app[CALLS].append((self.name, f"on_end:{ctx.outcome}:{ctx.error.status}"))
            return
        ctx.app[CALLS].append((self.name, f"on_end:{ctx.outcome}"))
        ctx.app[CALLS].append((self.name, f"usage:{ctx.usage and ctx.usage.total_tokens}"))
        body = ctx.response_json or {}
        if "outputs" in body:
            ctx.app[CALLS].append((self.name, f"outputs:{len(body['outputs'])}"))


class Rewriter:
    """Asks for the JSON body and rewrites it before it is sent."""

    @hookimpl
    def on_request(self, ctx: RequestContext) -> None:
        ctx.buffer_response = True

    @hookimpl
    def rewrite_response(self, ctx: RequestContext, body: Any) -> Any:
        return {**body, "rewritten": True}


class BrokenObserver:
    """Fails in observation hooks; the caller must not notice."""

    @hookimpl
    def on_end(self, ctx: RequestContext) -> None:
        raise RuntimeError("observer bug")


class StreamWatcher:
    """Notes each stream event it is given; with ``enough``, it stops after the first."""

    def __init__(self, name: str, enough: bool) -> None:
        self.name = name
        self.enough = enough

    @hookimpl
    def on_stream_event(self, ctx: RequestContext, event: SSEEvent) -> StopObserving | None:
        ctx.app.setdefault(CALLS, [])  # type: ignore[arg-type]
        ctx.app[CALLS].append((self.name, ctx.request_id))
        return STOP_OBSERVING if self.enough else None


class FailingStartup:
    """Its start-up fails (a database that is not there, say)."""

    @hookimpl
    def startup(self, app: web.Application) -> None:
        raise RuntimeError("cannot start")

    @hookimpl
    def shutdown(self, app: web.Application) -> None:
        app[CALLS].append(("failing", "shutdown"))


first = Recorder("first")
second = Recorder("second")
rewriter = Rewriter()
broken = BrokenObserver()
first_event_only = StreamWatcher("first_event_only", enough=True)
every_event = StreamWatcher("every_event", enough=False)
failing_startup = FailingStartup()
