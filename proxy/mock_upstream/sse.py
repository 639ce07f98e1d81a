"""Server-sent-event responses with inter-frame pacing and the ``cut_stream`` fault."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .connection import (
    CUT_AFTER_FRAMES,
    ClientGone,
    ConnectionDropped,
    client_gone,
    close_after_flush,
    sleep_unless_gone,
)
from .state import STATE_KEY

DONE_FRAME = b"data: [DONE]\n\n"


def data_frame(payload: Any) -> bytes:
    """A ``data: <json>`` frame as sent by chat/FIM completions."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def event_frame(event: str, payload: Any) -> bytes:
    """An ``event: <type>`` + ``data: <json>`` frame as sent by the conversations API."""
    body = json.dumps(payload, separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()


class SSEStream:
    """Writes frames to the client, pacing them by the current ``token_interval_ms``."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._sent = 0
        self._cut_after = request.get(CUT_AFTER_FRAMES)
        self.response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )

    async def start(self) -> None:
        """Send the response headers (and honour ``cut_stream`` with ``after_frames: 0``)."""
        await self.response.prepare(self._request)
        await self._maybe_cut()

    async def send(self, frame: bytes) -> None:
        """Send one frame, after the configured inter-frame delay if it is not the first."""
        interval_ms = self._request.app[STATE_KEY].settings.token_interval_ms
        if self._sent and interval_ms > 0:
            await sleep_unless_gone(self._request, interval_ms / 1000)
        if client_gone(self._request):
            raise ClientGone
        try:
            await self.response.write(frame)
        except ConnectionError as exc:
            raise ClientGone from exc
        self._sent += 1
        await self._maybe_cut()

    async def finish(self) -> web.StreamResponse:
        """End the stream normally."""
        try:
            await self.response.write_eof()
        except ConnectionError as exc:
            raise ClientGone from exc
        return self.response

    async def _maybe_cut(self) -> None:
        if self._cut_after is not None and self._sent >= self._cut_after:
            close_after_flush(self._request)
            raise ConnectionDropped
