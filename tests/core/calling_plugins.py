"""Plugins for the calling-convention and single-parse tests, loaded by module path
(``tests.core.calling_plugins:NAME``)."""

from __future__ import annotations

from typing import Any

from proxy import hookimpl
from proxy.context import RequestContext
from proxy.sse import SSEEvent


class BodyReader:
    """Records the parsed request body it is handed, and why it is not JSON if it is not."""

    def __init__(self) -> None:
        #: ``(ctx.json, ctx.json_error)`` of every request it saw.
        self.seen: list[tuple[Any, Exception | None]] = []

    @hookimpl
    def on_request(self, ctx: RequestContext) -> None:
        self.seen.append((ctx.json, ctx.json_error))


class FewArguments:
    """Implementations that declare only some of their hook's arguments, or take them
    positionally only, or have an extra one with a default the core leaves alone."""

    def __init__(self) -> None:
        #: The data of every stream event handed to ``on_stream_event`` (which gets no ctx).
        self.events: list[str] = []

    @hookimpl
    def on_request(self, ctx: RequestContext, /, marker: str = "default") -> None:
        ctx.response_headers["X-Marker"] = marker

    @hookimpl
    def on_response(self, ctx: RequestContext) -> None:
        ctx.response_headers["X-On-Response"] = "seen"

    @hookimpl
    def on_stream_event(self, event: SSEEvent) -> None:
        self.events.append(event.data)

    @hookimpl
    def rewrite_response(self, body: Any) -> Any:
        return {**body, "rewritten_by": "few_arguments"} if isinstance(body, dict) else None


class Buffering:
    """Asks the core to buffer JSON answers, for ``rewrite_response``."""

    @hookimpl
    def on_request(self, ctx: RequestContext) -> None:
        ctx.buffer_response = True


before = BodyReader()
after = BodyReader()
few_arguments = FewArguments()
buffering = Buffering()
