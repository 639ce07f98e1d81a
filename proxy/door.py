"""The protocol-level door: how the sidecar reads a request's line and headers, and how it
refuses what it cannot read.

aiohttp's own handler answers a malformed request with a text/plain 400 whose body repeats the
offending bytes (a caller's key in a folded ``Authorization`` line included) and logs them in
full; it waits for a request's headers for as long as the connection lives and lets them grow
to whatever its per-line limits multiply to. The door replaces that, through aiohttp's
extension points (a runner's ``_make_server`` hook, a :class:`web.Server` that makes the
connection handlers, a handler's ``handle_error`` and ``log_exception``) and, where aiohttp has
no hook, by standing in front of the parser a connection feeds (:class:`HeadGate`):

- every error it makes is JSON in Mistral's shape with an ``X-Request-ID``, and never contains
  a byte of the request: 400 ``invalid_request`` for what cannot be parsed, 408 for headers that
  took longer than ``header_timeout_seconds`` from their first byte, 431 for a request line and
  headers larger than ``max_header_bytes`` (counted while reading: nothing unbounded is
  buffered), 500 ``internal_error`` for an exception nobody handled;
- it logs one line per refusal (error class and a fixed reason, no request bytes);
- idle keep-alive connections stay governed by ``keepalive_timeout``: the header timer starts
  with the first byte of a request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
    TransferEncodingError,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from proxy.errors import SidecarError
from proxy.settings import Settings

logger = logging.getLogger("mistral_sidecar.door")

__all__ = ["DoorConfig", "DoorHandler", "DoorRunner", "DoorServer", "HeadGate",
           "HeaderTimeout", "HeadersTooLarge", "Refusal", "head_size", "parse_reason",
           "refusal_for"]


@dataclass(frozen=True)
class DoorConfig:
    """What the door lets in: header deadline and size, and aiohttp's per-line limits.

    ``keepalive_timeout``, ``max_line_size`` and ``max_field_size`` are aiohttp's own
    defaults.
    """

    header_timeout_seconds: float = 10.0
    max_header_bytes: int = 32 * 1024
    keepalive_timeout: float = 3630.0
    # aiohttp's defaults, which HTTP servers upstream share: a longer line would only be
    # refused there, in their own words.
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> DoorConfig:
        """The door ``settings`` ask for (``server.header_timeout_seconds``,
        ``server.max_header_bytes`` and ``server.max_header_count``; the rest as their
        defaults)."""
        return cls(header_timeout_seconds=float(settings["server.header_timeout_seconds"]),
                   max_header_bytes=int(settings["server.max_header_bytes"]),
                   max_headers=int(settings["server.max_header_count"]))

    def handler_kwargs(self) -> dict[str, Any]:
        """The keyword arguments every connection's :class:`DoorHandler` is made with."""
        return {"keepalive_timeout": self.keepalive_timeout, "access_log": None,
                "max_line_size": self.max_line_size, "max_field_size": self.max_field_size,
                "max_headers": self.max_headers}


# --- refusals --------------------------------------------------------------------------------


class HeaderTimeout(BadHttpMessage):
    """The request line and headers did not arrive in time."""

    def __init__(self) -> None:
        super().__init__("request headers not received in time")


class HeadersTooLarge(BadHttpMessage):
    """The request line and headers are larger than the door allows."""

    def __init__(self) -> None:
        super().__init__("request line and headers too large")


@dataclass(frozen=True)
class Refusal:
    """What the door answers and logs for one error: the error and a fixed reason (never
    request bytes); ``traceback`` when the log line should carry the exception's."""

    error: SidecarError
    reason: str
    traceback: bool = False


#: aiohttp messages that carry no request bytes, by their exact text.
_FIXED_MESSAGES = {
    "Too many headers received": "too many headers",
    "Missing 'Host' header in request.": "missing Host header",
    "Received HTTPS traffic on an HTTP port": "TLS sent to a plain HTTP port",
    "Bad line ending, expected CRLF": "bad line ending",
    "Request has invalid `Transfer-Encoding`": "invalid Transfer-Encoding",
    "Data after `Connection: close`": "data after Connection: close",
}
#: The description llhttp gives (a constant of the C library) before the request bytes it
#: quotes; anything else in the text is never used.
_LLHTTP_REASON = re.compile(r"^[A-Z][A-Za-z ,/'-]{2,80}$")
#: Generic reasons by class, most specific first.
_CLASS_REASONS: Sequence[tuple[type[BaseException], str]] = (
    (BadHttpMethod, "invalid method"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "invalid request target"),
    (InvalidHeader, "invalid header"),
    (TransferEncodingError, "invalid chunked body"),
    (ContentLengthError, "body shorter than its Content-Length"),
    (PayloadEncodingError, "body does not match its Content-Encoding"),
)


def parse_reason(exc: BaseException) -> str:
    """A short reason for an aiohttp parse error, made only of fixed text: what kind of
    error, and llhttp's description of it when there is one."""
    message = getattr(exc, "message", "")
    if isinstance(message, str) and message in _FIXED_MESSAGES:
        return _FIXED_MESSAGES[message]
    reason = next((text for kind, text in _CLASS_REASONS if isinstance(exc, kind)),
                  "malformed request")
    if isinstance(message, str) and "\n\n" in message:
        # llhttp: "<description>:\n\n  <quoted bytes>\n  ^"; only the description is used.
        head = message.split("\n\n", 1)[0].splitlines()
        detail = head[-1].strip().rstrip(":") if head else ""
        if _LLHTTP_REASON.match(detail):
            return f"{reason} ({detail[0].lower() + detail[1:]})"
    return reason


def refusal_for(status: int, exc: BaseException | None,
                config: DoorConfig | None = None) -> Refusal:
    """The answer to an error aiohttp reports to ``handle_error`` (``status`` is aiohttp's
    guess: 400 for a parse error, 500 for an exception, 504 for a handler timeout);
    ``config`` gives the limits a 431 names."""
    if isinstance(exc, HeaderTimeout):
        return Refusal(SidecarError(408, "The request headers were not received in time.",
                                    type="invalid_request_error", code="request_timeout"),
                       "header timeout")
    if isinstance(exc, HeadersTooLarge | LineTooLong) or (
            isinstance(exc, BadHttpMessage) and exc.message == "Too many headers received"):
        limits = config or DoorConfig()
        return Refusal(SidecarError(
            431, f"The request line and headers are too large: the limits are "
            f"{limits.max_header_bytes} bytes in all, {limits.max_headers} header lines and "
            f"{limits.max_field_size} bytes per line.", type="invalid_request_error",
            code="request_header_fields_too_large"),
                       "headers too large" if not isinstance(exc, LineTooLong)
                       else "line too long")
    if isinstance(exc, web.RequestPayloadError | PayloadEncodingError):
        reason = parse_reason(exc.__cause__ or exc)
        if reason.startswith("malformed request"):
            reason = "unreadable body"
        return Refusal(SidecarError(400, f"The request body could not be read: {reason}."),
                       reason)
    if isinstance(exc, HttpProcessingError):
        reason = parse_reason(exc)
        return Refusal(SidecarError(400, f"Malformed HTTP request: {reason}."), reason)
    if status == 504:
        return Refusal(SidecarError(504, "The request timed out."), "handler timeout")
    name = type(exc).__name__ if exc is not None else "error"
    return Refusal(SidecarError(500, "The sidecar failed to handle this request."),
                   f"unhandled {name}", traceback=exc is not None)


# --- reading the head ------------------------------------------------------------------------

_NOTHING: tuple[Sequence[Any], bool, bytes] = ((), False, b"")


def _nothing_to_surface() -> None:
    """What a closed gate's timer would surface to."""


def head_size(message: RawRequestMessage) -> int:
    """The size of a parsed request line and headers, as sent (to a few bytes)."""
    size = len(message.method) + len(message.path) + len("  HTTP/1.1\r\n\r\n")
    for name, value in message.raw_headers:
        size += len(name) + len(value) + 4
    return size


class HeadGate:
    """Stands in front of a connection's HTTP parser and measures each request's head.

    The clock starts with the first byte of a request (not while a keep-alive connection is
    idle) and stops when the parser produces the request; the bytes are counted while they
    arrive. A late or oversized head becomes a parse error, which aiohttp queues in order
    behind any request already being handled and answers through ``handle_error``. After
    any parse error the rest of the connection's bytes are dropped unread.

    A head that starts in the same read as the end of the previous request is timed from
    the next read that brings more of it (until then the keep-alive timeout applies).
    """

    __slots__ = (
        "_body",
        "_deadline",
        "_failed",
        "_head_bytes",
        "_in_head",
        "_loop",
        "_max_bytes",
        "_parser",
        "_pending",
        "_surface",
        "_timeout",
        "_timer",
    )

    def __init__(self, parser: Any, surface: Callable[[], None],
                 loop: asyncio.AbstractEventLoop, config: DoorConfig) -> None:
        self._parser = parser
        self._surface = surface
        self._loop = loop
        self._timeout = config.header_timeout_seconds
        self._max_bytes = config.max_header_bytes
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._head_bytes = 0
        self._in_head = False
        self._body: StreamReader | None = None
        self._failed = False
        self._pending: HttpProcessingError | None = None

    def __getattr__(self, name: str) -> Any:
        """Everything but ``feed_data`` is the parser's."""
        return getattr(self._parser, name)

    def feed_data(self, data: bytes) -> tuple[Sequence[Any], bool, bytes]:
        """Parse ``data``, timing and measuring the head it belongs to."""
        if self._failed:
            return _NOTHING
        if self._pending is not None:
            raise self._fail(self._pending)
        if data and not self._in_head and (self._body is None or self._body.is_eof()):
            self._start_head()
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except Exception as exc:
            raise self._fail(exc) from None
        if messages:
            for message, _payload in messages:
                if head_size(message) > self._max_bytes:
                    raise self._fail(HeadersTooLarge())
            self._body = messages[-1][1]
            # The timer stays: it notices there is no head in progress when it fires.
            self._in_head = False
        elif self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_bytes:
                raise self._fail(HeadersTooLarge())
        return messages, upgraded, tail

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._deadline = self._loop.time() + self._timeout
        # One timer per connection, rescheduled when it fires early, rather than one made
        # and cancelled per request (as aiohttp does for its keep-alive timeout).
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._expired)

    def _fail(self, exc: BaseException) -> BaseException:
        self._failed = True
        self._pending = None
        self._end_head()
        body = self._body
        if body is not None and not body.is_eof():
            # The error is in the body of a request being handled: its reader must fail
            # now, not wait for bytes that will never be parsed.
            body.set_exception(web.RequestPayloadError("the request body could not be parsed"))
        return exc

    def _end_head(self) -> None:
        self._in_head = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if not self._in_head or self._failed:
            return
        if self._loop.time() + 0.001 < self._deadline:  # set for an earlier head
            self._timer = self._loop.call_at(self._deadline, self._expired)
            return
        self._pending = HeaderTimeout()
        self._surface()

    def close(self) -> None:
        """The connection is gone: stop the clock and let go of the handler and the last
        body (no reference cycle left for the garbage collector)."""
        self._end_head()
        self._surface = _nothing_to_surface
        self._body = None
        self._parser = None


class DoorHandler(web.RequestHandler):
    """One connection: aiohttp's handler with the :class:`HeadGate` in front of its parser
    and Mistral-shaped refusals."""

    __slots__ = ("_backstop", "_door_config", "_gate")

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop,
                 door: DoorConfig, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._door_config = door
        self._backstop: asyncio.TimerHandle | None = None
        self._gate = HeadGate(self._parser, self._header_timeout, loop, door)
        # aiohttp has no hook for the parser a connection feeds: the gate stands in front.
        self._parser = self._gate  # type: ignore[assignment]

    def _header_timeout(self) -> None:
        # Queue the 408 behind whatever the connection is handling; if it cannot be written
        # in a while (a caller that does not read), the connection is closed regardless.
        self.data_received(b"")
        grace = max(1.0, self._door_config.header_timeout_seconds)
        self._backstop = self._loop.call_later(grace, self.force_close)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the door's timers, then let aiohttp clean up."""
        self._gate.close()
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own error log: a body the caller garbled (already answered 400, then
        met again while the rest of the body is drained) is one line without traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            logger.debug("door dropped an unreadable request body: %s",
                         refusal_for(400, exc).reason, extra={"error_class": type(exc).__name__})
            return
        super().log_exception(*args, **kw)

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A Mistral-shaped JSON error that echoes nothing of the request; one log line.

        ``message`` (aiohttp's text, which quotes the request) is never used.
        """
        refusal = refusal_for(status, exc, self._door_config)
        request_id = os.urandom(16).hex()
        error = refusal.error
        level = logging.ERROR if error.status >= 500 else logging.INFO
        if isinstance(exc, BadHttpMethod):
            level = logging.DEBUG  # scanners and TLS clients on the plain port: noise
        if logger.isEnabledFor(level):
            logger.log(level, "door refused a request: %s %s (%s)", error.status,
                       refusal.reason, type(exc).__name__ if exc is not None else "-",
                       exc_info=exc if refusal.traceback else None,
                       extra={"status": error.status, "error": error.code,
                              "error_class": type(exc).__name__ if exc else None,
                              "reason": refusal.reason, "request_id": request_id,
                              "peer": request.remote})
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response "
                                  "with the error message")
        response = error.to_response({"X-Request-ID": request_id})
        response.force_close()
        return response


_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class DoorServer(web.Server):
    """Makes a :class:`DoorHandler` for every connection, with explicit handler arguments."""

    def __init__(self, handler: _Handler, *,
                 request_factory: Callable[..., web.BaseRequest] | None = None,
                 door: DoorConfig, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(handler, request_factory=request_factory,
                         handler_cancellation=True, loop=loop)
        self.door = door
        self._door_loop = loop or asyncio.get_running_loop()
        self._handler_kwargs = door.handler_kwargs()

    def __call__(self) -> DoorHandler:
        """The protocol for one new connection."""
        return DoorHandler(self, loop=self._door_loop, door=self.door, **self._handler_kwargs)


class DoorRunner(web.AppRunner):
    """An :class:`web.AppRunner` whose server is a :class:`DoorServer`."""

    def __init__(self, app: web.Application, door: DoorConfig | None = None, *,
                 shutdown_timeout: float = 60.0) -> None:
        super().__init__(app, handle_signals=False, access_log=None,
                         handler_cancellation=True, shutdown_timeout=shutdown_timeout)
        self.door = door or DoorConfig()

    async def _make_server(self) -> web.Server:
        # aiohttp's own server gives the application's request handler and factory (and runs
        # its start-up); the door serves them through its own handlers.
        plain = await super()._make_server()
        return DoorServer(json_http_errors(plain.request_handler),
                          request_factory=plain.request_factory, door=self.door,
                          loop=asyncio.get_running_loop())


def json_http_errors(handler: _Handler) -> _Handler:
    """``handler`` with aiohttp's own HTTP errors (no route for ``CONNECT`` or an empty
    path, an ``Expect`` it does not know) answered in Mistral's shape: the status and its
    standard phrase, never a byte of the request. The sidecar's own handlers answer with
    :class:`~proxy.errors.SidecarError`, so every ``HTTPException`` seen here is aiohttp's."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = SidecarError(exc.status, f"{exc.reason}.").to_response(
                {"X-Request-ID": os.urandom(16).hex()})
            response.force_close()
            return response

    return handle
