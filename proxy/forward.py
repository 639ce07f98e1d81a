"""The forwarding path: one request from the caller, through the hook chain, to upstream and back.

Nothing is sent to the caller before upstream's status and headers are known, so an upstream
429 or 5xx reaches the caller as itself. Bodies stream in both directions; JSON request bodies
(bounded) are read so plugins can inspect them; SSE frames are written the moment they arrive
and observed afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy import STOP_OBSERVING, jsoncodec
from proxy.canonical import CanonicalTarget, canonical_target, upstream_path
from proxy.chain import HookCaller, PluginChain, await_me_maybe
from proxy.context import (
    CURRENT_REQUEST,
    Outcome,
    RequestContext,
    UpstreamCall,
    UpstreamResponse,
    Usage,
)
from proxy.errors import SidecarError, UpstreamError
from proxy.late_answer import LateAnswer, discard, keeps_going, read_late_answer
from proxy.operations import OperationIndex
from proxy.sse import SSEParser, assembler_for

if TYPE_CHECKING:
    from proxy.settings import Settings
    from proxy.sse import ChatStreamAssembler, ConversationStreamAssembler

logger = logging.getLogger("mistral_sidecar.forward")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})
#: Request headers never forwarded as received: hop-by-hop ones, those the client library
#: recomputes for the upstream connection, the caller's credentials, the body's encoding
#: (bodies go upstream decoded), and headers some servers read as another method or path than
#: the one that was authorised.
_DROP_REQUEST = HOP_BY_HOP | {
    "host", "authorization", "content-length", "content-encoding", "expect", "x-request-id",
    "x-http-method-override", "x-http-method", "x-method-override", "x-original-url",
    "x-rewrite-url",
}
#: Content-Encodings the HTTP server decodes while reading a request body (aiohttp's own set).
_DECODED_ENCODINGS = frozenset({"gzip", "deflate", "br", "zstd"})
_DROP_RESPONSE = HOP_BY_HOP
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
#: Longest an ``on_end`` observer's awaitable may take before it is abandoned.
END_HOOK_TIMEOUT = 30
#: Responses up to this size with a known length are read whole and sent in one write.
_SMALL_BODY = 256 * 1024
#: ``ctx.state`` key: the upstream exchange of a billed call whose caller hung up.
_LATE_ANSWER = "_core_late_answer"


def _connection_tokens(headers: Any) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _is_json_type(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


class BodyTooLarge(Exception):
    """A streamed request body went past its limit."""


class Forwarder:
    """Handles every proxied request; one instance per application."""

    def __init__(
        self,
        settings: Settings,
        chain: PluginChain,
        operations: OperationIndex,
    ) -> None:
        self.settings = settings
        self.chain = chain
        self.operations = operations
        base = URL(str(settings["upstream.base_url"]))
        # Scheme, host and port of every upstream URL come from configuration only.
        self.upstream_scheme = base.scheme
        self.upstream_authority = base.origin().raw_authority
        self.base_path = base.raw_path.rstrip("/")
        keys = settings["upstream.api_key"]
        self.default_api_key: str | None = keys[0] if keys else None
        self.first_byte_timeout = float(settings["upstream.first_byte_timeout_seconds"])
        self.idle_timeout = float(settings["upstream.idle_timeout_seconds"])
        self.total_timeout = float(settings["upstream.total_timeout_seconds"])
        self.max_json_body = int(settings["limits.max_json_body_bytes"])
        self.max_upload = int(settings["limits.max_upload_bytes"])
        self.max_capture = int(settings["limits.max_capture_bytes"])
        self.on_request_hooks = chain.callers("on_request")
        self.wrap_hooks = chain.callers("wrap_upstream")
        self.on_response_hooks = chain.callers("on_response")
        self.rewrite_hooks = chain.callers("rewrite_response")
        self.stream_observers = chain.callers("on_stream_event")
        self.end_hooks = chain.callers("on_end")
        self.session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        #: Set at shutdown: late answers are no longer waited for.
        self._closing = asyncio.Event()
        #: Late answers waited for now, and at most how many (a quarter of the upstream
        #: connections: the rest stay for callers who wait).
        self._late_answers = 0
        self.max_late_answers = max(1, int(settings["upstream.max_connections"]) // 4)
        #: Requests received and not yet answered (handlers running right now).
        self.in_flight = 0

    # --- entry point ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for every ``/v1/...`` and ``/v2/...`` request."""
        incoming_id = request.headers.get("X-Request-ID")
        request_id = (
            incoming_id
            if incoming_id and _REQUEST_ID_RE.match(incoming_id)
            else os.urandom(16).hex()
        )
        refused: SidecarError | None = None
        try:
            target = canonical_target(request.raw_path)
        except SidecarError as error:
            refused, target = error, CanonicalTarget(_printable(request.raw_path), "")
        # HEAD is GET without the body: classified, and so authorised, as GET.
        method = "GET" if request.method == "HEAD" else request.method
        path = target.path
        operation, params = (None, {}) if refused else self.operations.classify(method, path)
        ctx = RequestContext(request, request.app, request_id, operation, params,
                             path, target.query)
        ctx.upstream_api_key = self.default_api_key
        # In flight, and this task's current request, until the handler returns.
        self.in_flight += 1
        current = CURRENT_REQUEST.set(ctx)
        try:
            return await self._handle(ctx, method, refused)
        except asyncio.CancelledError:
            # The caller hung up (aiohttp cancels the handler). The request still ends once,
            # in full, outside this task.
            if not ctx.ended:
                self._end_detached(ctx, Outcome.CLIENT_GONE)
            raise
        finally:
            self.in_flight -= 1
            CURRENT_REQUEST.reset(current)

    async def _handle(self, ctx: RequestContext, method: str, refused: SidecarError | None
                      ) -> web.StreamResponse:
        request = ctx.request
        answer: web.StreamResponse | None = None
        try:
            if refused is not None:
                raise refused
            _check_content_encoding(request)
            await self._read_body(ctx)
            # Parsing JSON is the costliest thing a pass-through does; only look when the
            # body can possibly ask for a stream.
            if ctx.body and b'"stream"' in ctx.body:
                body = ctx.json
                if isinstance(body, dict) and body.get("stream") is True:
                    ctx.is_stream = True
                    stream_op, stream_params = self.operations.classify(
                        method, ctx.path, stream=True)
                    if stream_op is not None:
                        ctx.operation, ctx.path_params = stream_op, stream_params

            for hook in self.on_request_hooks:
                # Most hooks are synchronous and return None: no coroutine for them.
                answer = hook(ctx=ctx)
                if answer is not None and inspect.isawaitable(answer):
                    answer = await answer
                if answer is not None:
                    break
            else:
                call = self._compose(ctx)
                upstream = await call(ctx)
        except SidecarError as error:
            return await self._error(ctx, error)
        except Exception:
            return await self._error(ctx, self._internal_error(ctx))
        if answer is not None:
            return await self._answered(ctx, answer)
        return await self._relay(ctx, upstream)

    async def _answered(self, ctx: RequestContext, answer: web.StreamResponse
                        ) -> web.StreamResponse:
        """A plugin answered in ``on_request``; observers (logs, metrics) still see it."""
        ctx.response_status = answer.status
        await self._end(ctx, Outcome.ANSWERED)
        return answer


    # --- request side ---------------------------------------------------------------------

    async def _read_body(self, ctx: RequestContext) -> None:
        request = ctx.request
        if not request.body_exists:
            return
        content_type = request.headers.get("Content-Type", "")
        is_json = _is_json_type(content_type) or (
            not content_type and ctx.operation is not None
            and ctx.operation.request_kind == "json"
        )
        length = request.content_length
        if is_json:
            if length is not None and length > self.max_json_body:
                raise SidecarError(
                    413, f"Request body of {length} bytes exceeds the limit of "
                    f"{self.max_json_body} bytes for JSON bodies.")
            ctx.body = await self._read_bounded(request, self.max_json_body)
            if not ctx.body and length and "Content-Encoding" in request.headers:
                # A compressed stream cut before its first block decodes to nothing.
                raise _unreadable_body()
            if jsoncodec.has_lone_surrogate(ctx.body):
                # Refused before any plugin sees it: no database, log line or upstream
                # request could carry such a string.
                raise SidecarError(
                    400, "The JSON body is not valid Unicode text: it holds half of a UTF-16 "
                    "surrogate pair on its own (\\ud800 to \\udfff), escaped or encoded.",
                    code="invalid_unicode")
        elif length is not None and length > self.max_upload:
            raise SidecarError(
                413, f"Request body of {length} bytes exceeds the upload limit of "
                f"{self.max_upload} bytes.")

    @staticmethod
    async def _read_bounded(request: web.Request, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await request.content.readany()
            except web.RequestPayloadError:
                raise _unreadable_body() from None
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise SidecarError(
                    413, f"Request body exceeds the limit of {limit} bytes for JSON bodies.")
            parts.append(chunk)

    async def _stream_body(self, request: web.Request, ctx: RequestContext) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            try:
                chunk = await request.content.readany()
            except web.RequestPayloadError:
                ctx.state["_core_body_unreadable"] = True
                raise
            if not chunk:
                return
            sent += len(chunk)
            if sent > self.max_upload:
                ctx.state["_core_body_too_large"] = True
                raise BodyTooLarge()
            yield chunk

    def _upstream_headers(self, ctx: RequestContext) -> CIMultiDict[str]:
        incoming = ctx.request.headers
        drop = _DROP_REQUEST
        if "Connection" in incoming:
            drop = drop | _connection_tokens(incoming)
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in incoming.items():
            if name.lower() not in drop:
                headers.add(name, value)
        if (ctx.body is None and ctx.request.body_exists
                and ctx.request.content_length is not None and "Content-Encoding" not in incoming):
            # A decoded body's length is unknown until it is read: it goes chunked.
            headers["Content-Length"] = str(ctx.request.content_length)
        headers["X-Request-ID"] = ctx.request_id
        operation = ctx.operation
        if ctx.buffer_response or (operation is not None and operation.reports_usage):
            # A body the sidecar must read (to rewrite it, or for the usage upstream bills
            # by, which a caller's Accept-Encoding must not hide) has to arrive uncompressed.
            headers["Accept-Encoding"] = "identity"
        headers.update(ctx.upstream_headers)
        return headers

    def _compose(self, ctx: RequestContext) -> UpstreamCall:
        call: UpstreamCall = self._send
        for hook in reversed(self.wrap_hooks):
            wrapped = hook(ctx=ctx, call=call)
            if wrapped is not None:
                call = wrapped
        return call

    async def _send(self, ctx: RequestContext) -> UpstreamResponse:
        """One attempt: send the request, return once status and headers are in."""
        assert self.session is not None
        _drop_late(ctx)
        if ctx.timing.upstream_started is None:
            ctx.timing.upstream_started = _now()
        ctx.attempts += 1
        headers = self._upstream_headers(ctx)
        if ctx.upstream_api_key:
            headers["Authorization"] = f"Bearer {ctx.upstream_api_key}"
        data: Any = None
        if ctx.body is not None:
            data = ctx.body
        elif ctx.request.body_exists:
            if ctx.attempts > 1:
                raise SidecarError(
                    502, "Upstream failed and a streamed request body cannot be replayed.",
                    type="upstream_error", code="upstream_unreplayable")
            data = self._stream_body(ctx.request, ctx)
        remaining = self.total_timeout - (_now() - ctx.timing.started)
        url = URL.build(scheme=self.upstream_scheme, authority=self.upstream_authority,
                        path=self.base_path + upstream_path(ctx.path),
                        query_string=ctx.query_string, encoded=True)
        sending = self.session.request(ctx.method, url, headers=headers, data=data,
                                       allow_redirects=False)
        # A billed JSON call runs in a task of its own, shielded: if its caller hangs up, it
        # finishes (proxy.late_answer). Any other is cancelled with its caller.
        exchange = asyncio.ensure_future(sending) if keeps_going(ctx) else None
        wait = max(0.0, min(self.first_byte_timeout, remaining))
        headers_due = asyncio.get_running_loop().time() + wait
        try:
            async with asyncio.timeout(wait):
                raw = await (sending if exchange is None else asyncio.shield(exchange))
        except asyncio.CancelledError:
            if exchange is not None:
                # Read by _end_detached if the caller hung up (headers still due within this
                # attempt's wait); else dropped (_drop_late).
                ctx.state[_LATE_ANSWER] = LateAnswer(exchange, headers_due)
            raise
        except TimeoutError:
            if exchange is not None:
                exchange.cancel()
            raise UpstreamError("timeout", "Upstream did not answer in time.") from None
        except aiohttp.ClientConnectorError:
            raise UpstreamError("connect", "Upstream is unreachable.") from None
        except (aiohttp.ClientError, BodyTooLarge, web.RequestPayloadError, OSError) as exc:
            if ctx.state.get("_core_body_too_large"):
                raise SidecarError(
                    413, f"Request body exceeds the upload limit of {self.max_upload} bytes."
                ) from None
            if ctx.state.get("_core_body_unreadable"):
                raise _unreadable_body() from None
            raise UpstreamError(
                "reset", f"Upstream closed the connection ({type(exc).__name__}).") from None
        ctx.upstream_status = raw.status
        return UpstreamResponse(raw, ctx.attempts)

    # --- response side --------------------------------------------------------------------

    async def _relay(self, ctx: RequestContext, upstream: UpstreamResponse) -> web.StreamResponse:
        raw = upstream.raw
        ctx.timing.upstream_headers = _now()
        try:
            for hook in self.on_response_hooks:
                result = hook(ctx=ctx, response=upstream)
                if result is not None and inspect.isawaitable(result):
                    await result
            content_type = raw.headers.get("Content-Type", "")
            is_sse = content_type.startswith("text/event-stream")
            is_json = not is_sse and _is_json_type(content_type)
            encoded = raw.headers.get("Content-Encoding", "identity").lower() != "identity"
            ctx.response_status = raw.status
            if ctx.buffer_response and is_json and not encoded and self.rewrite_hooks:
                return await self._relay_rewritten(ctx, upstream)
            length = raw.content_length
            if not is_sse and length is not None and length <= _SMALL_BODY:
                return await self._relay_small(ctx, upstream, is_json and not encoded)
        except SidecarError as error:
            await upstream.release()
            return await self._error(ctx, error)
        except Exception:
            await upstream.release()
            return await self._error(ctx, self._internal_error(ctx))
        except BaseException:
            await upstream.release()
            raise
        return await self._relay_stream(ctx, upstream, is_sse, is_json and not encoded,
                                        is_sse and not encoded)

    async def _relay_stream(self, ctx: RequestContext, upstream: UpstreamResponse,
                            is_sse: bool, capture_json: bool, parse_events: bool
                            ) -> web.StreamResponse:
        """A body of unknown or large size, or a stream: written as it arrives."""
        request = ctx.request
        raw = upstream.raw
        response = web.StreamResponse(status=raw.status, reason=raw.reason)
        self._copy_response_headers(ctx, raw, response)
        capture: list[bytes] | None = [] if capture_json else None
        captured = 0
        parser = SSEParser() if parse_events else None
        assembler: ChatStreamAssembler | ConversationStreamAssembler | None = None
        # Observers that have seen enough of this stream leave this tuple.
        observers = self.stream_observers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout - (_now() - ctx.timing.started)
        broken: SidecarError | None = None
        try:
            await response.prepare(request)
            async with asyncio.timeout_at(min(deadline, loop.time() + self.idle_timeout)) as timer:
                while True:
                    chunk = await raw.content.readany()
                    if not chunk:
                        break
                    timer.reschedule(min(deadline, loop.time() + self.idle_timeout))
                    await response.write(chunk)
                    if ctx.timing.first_byte_sent is None:
                        ctx.timing.first_byte_sent = _now()
                    ctx.response_bytes += len(chunk)
                    if parser is not None:
                        for event in parser.feed(chunk):
                            if assembler is None:
                                assembler = assembler_for(event)
                            assembler.add(event)
                            if ctx.timing.first_token is None and assembler.has_output:
                                ctx.timing.first_token = _now()
                            for observe in observers:
                                if observe(ctx=ctx, event=event) is STOP_OBSERVING:
                                    observers = tuple(o for o in observers if o is not observe)
                    elif capture is not None:
                        captured += len(chunk)
                        if captured <= self.max_capture:
                            capture.append(chunk)
                        else:
                            capture = None
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            raw.close()
            self._finish(ctx, None, assembler)
            await self._end(ctx, Outcome.CLIENT_GONE)
            return response
        except (TimeoutError, aiohttp.ClientError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "reset"
            broken = UpstreamError(reason, "Upstream stream broke.")
        except asyncio.CancelledError:
            raw.close()
            self._finish(ctx, None, assembler)
            raise
        except Exception:
            broken = self._internal_error(ctx)
        if broken is not None:
            raw.close()
            # Headers are gone already: the only honest signal left is to cut the connection
            # so the caller sees a truncated body rather than a complete-looking one.
            if request.transport is not None:
                request.transport.abort()
            self._finish(ctx, None, assembler)
            await self._end(ctx, Outcome.BROKEN, broken)
            return response
        raw.release()
        self._finish(ctx, capture, assembler)
        await self._end(ctx, Outcome.OK)
        return response

    def _finish(
        self,
        ctx: RequestContext,
        capture: list[bytes] | None,
        assembler: ChatStreamAssembler | ConversationStreamAssembler | None,
    ) -> None:
        ctx.timing.finished = _now()
        if assembler is not None:
            ctx.response_json = assembler.result()
            if assembler.usage is None:
                # Cut short before its last event, or upstream left usage out.
                ctx.estimate_usage(assembler.output_events, assembler.output_chars)
        elif capture is not None:
            ctx.set_response_body(b"".join(capture))

    def _copy_response_headers(
        self, ctx: RequestContext, raw: aiohttp.ClientResponse, response: web.StreamResponse
    ) -> None:
        drop = _DROP_RESPONSE
        if "Connection" in raw.headers:
            drop = drop | _connection_tokens(raw.headers)
        headers = response.headers
        for name, value in raw.headers.items():
            if name.lower() not in drop:
                headers.add(name, value)
        headers["X-Request-ID"] = ctx.request_id
        for name, value in ctx.response_headers.items():
            headers[name] = value

    async def _read_whole(self, raw: aiohttp.ClientResponse) -> bytes | UpstreamError:
        """The whole response body, or the error to answer with when upstream broke off."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await raw.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raw.close()
            reason = "timeout" if isinstance(exc, TimeoutError) else "reset"
            return UpstreamError(reason, "Upstream body broke.")

    async def _relay_small(
        self, ctx: RequestContext, upstream: UpstreamResponse, capture: bool
    ) -> web.StreamResponse:
        """A small body of known length: read it whole, answer in one write."""
        raw = upstream.raw
        body = await self._read_whole(raw)
        if isinstance(body, UpstreamError):
            return await self._error(ctx, body)
        response = web.Response(status=raw.status, reason=raw.reason, body=body)
        self._copy_response_headers(ctx, raw, response)
        ctx.response_bytes = len(body)
        ctx.timing.finished = ctx.timing.first_byte_sent = _now()
        if capture:
            ctx.set_response_body(body)
        await self._end(ctx, Outcome.OK)
        return response

    async def _relay_rewritten(
        self, ctx: RequestContext, upstream: UpstreamResponse
    ) -> web.StreamResponse:
        raw = upstream.raw
        body_bytes = await self._read_whole(raw)
        if isinstance(body_bytes, UpstreamError):
            return await self._error(ctx, body_bytes)
        ctx.set_response_body(body_bytes)
        body = ctx.response_json
        for hook in self.rewrite_hooks:
            replaced = await await_me_maybe(hook(ctx=ctx, body=body))
            if replaced is not None:
                body = replaced
        ctx.response_json = body
        response = web.json_response(body, status=raw.status, reason=raw.reason)
        skip = {"content-length", "content-type"}
        for name, value in raw.headers.items():
            if name.lower() not in _DROP_RESPONSE and name.lower() not in skip:
                response.headers.add(name, value)
        response.headers["X-Request-ID"] = ctx.request_id
        response.headers.update(ctx.response_headers)
        ctx.timing.finished = _now()
        await self._end(ctx, Outcome.OK)
        return response

    # --- the end ---------------------------------------------------------------------------

    async def _end(self, ctx: RequestContext, outcome: Outcome,
                   error: SidecarError | None = None) -> None:
        """End the request: tell every ``on_end`` observer, once, in chain order.

        Observers run synchronously until one returns an awaitable; from there on the rest
        runs in a task of its own that the handler's cancellation (the caller hanging up)
        cannot stop, tracked for shutdown. What observers raise is logged.
        """
        if ctx.ended:
            return
        _drop_late(ctx)
        ctx.ended = True
        ctx.outcome = outcome
        ctx.error = error
        if ctx.timing.finished is None:
            ctx.timing.finished = _now()
        if (outcome is Outcome.CLIENT_GONE or outcome is Outcome.BROKEN) \
                and ctx.response_json is None:
            # Cut short before any answer was read: upstream read the prompt all the same.
            ctx.estimate_usage()
        hooks = self.end_hooks
        for index, hook in enumerate(hooks):
            result = _observe(hook, ctx)
            if result is not None:
                task = self._track(self._end_rest(ctx, hook, result, hooks[index + 1:]))
                await asyncio.shield(task)
                return

    async def _end_rest(self, ctx: RequestContext, first: HookCaller,
                        result: Awaitable[Any], rest: tuple[HookCaller, ...]) -> None:
        await _guarded_await(first, result)
        for hook in rest:
            pending = _observe(hook, ctx)
            if pending is not None:
                await _guarded_await(hook, pending)

    def _end_detached(self, ctx: RequestContext, outcome: Outcome) -> None:
        """End a request whose handler was cancelled, in a task of its own: once upstream
        answered it, when it is a billed call upstream was working on."""
        late = ctx.state.pop(_LATE_ANSWER, None)
        if late is not None and self._late_answers >= self.max_late_answers:
            # Callers that leave must not hold more upstream connections than this: past it,
            # the exchange goes with its caller and is estimated.
            discard(late.exchange)
            late = None
        if late is None:
            self._track(self._end(ctx, outcome))
            return

        self._late_answers += 1

        async def end_once_answered() -> None:
            try:
                deadline = asyncio.get_running_loop().time() + max(
                    0.0, self.total_timeout - (_now() - ctx.timing.started))
                await read_late_answer(ctx, late, deadline, self._closing, self.max_capture)
            finally:
                self._late_answers -= 1
            await self._end(ctx, outcome)

        self._track(end_once_answered())

    def _track(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _internal_error(self, ctx: RequestContext) -> SidecarError:
        """The answer to an exception nobody handled (call from its ``except`` block)."""
        logger.exception("request %s failed: %s %s", ctx.request_id, ctx.method, ctx.path)
        return SidecarError(500, f"The sidecar failed to handle this request (request id "
                            f"{ctx.request_id}).", code="internal_error")

    async def _error(self, ctx: RequestContext, error: SidecarError) -> web.Response:
        ctx.response_status = error.status
        ctx.timing.finished = _now()
        body = error.encoded()
        # Observers (the access line) see the size of the answer they are told about.
        ctx.response_bytes = len(body)
        await self._end(ctx, Outcome.ERROR, error)
        headers = {"X-Request-ID": ctx.request_id}
        headers.update(ctx.response_headers)
        return error.to_response(headers, body)

    async def drain_background(self) -> None:
        """Wait for ends still running for requests whose callers went away (answers
        upstream still owes them are no longer waited for)."""
        self._closing.set()
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _drop_late(ctx: RequestContext) -> None:
    """Cancel an upstream exchange left by an attempt a wrapper gave up on (cancelled by a
    timeout of its own, not by the caller hanging up): nobody will read its answer."""
    if _LATE_ANSWER in ctx.state:
        discard(ctx.state.pop(_LATE_ANSWER).exchange)


def _observe(hook: HookCaller, ctx: RequestContext) -> Awaitable[Any] | None:
    """Call one ``on_end`` observer: what it returns to await, if anything; what it raises
    is logged."""
    try:
        result = hook(ctx=ctx)
    except Exception:
        logger.exception("plugin %s failed in on_end", hook.plugin_name)
        return None
    return result if result is not None and inspect.isawaitable(result) else None


async def _guarded_await(hook: HookCaller, result: Awaitable[Any]) -> None:
    try:
        async with asyncio.timeout(END_HOOK_TIMEOUT):
            await result
    except TimeoutError:
        logger.error("plugin %s took longer than %d s in on_end; abandoned", hook.plugin_name,
                     END_HOOK_TIMEOUT)
    except Exception:
        logger.exception("plugin %s failed in on_end", hook.plugin_name)


def _check_content_encoding(request: web.Request) -> None:
    """Refuse a body whose encoding the server did not decode while reading it: the sidecar
    could not inspect it, and upstream would read it differently."""
    encodings = request.headers.getall("Content-Encoding", ())
    if not encodings:
        return
    if len(encodings) > 1:
        raise SidecarError(415, "Send at most one Content-Encoding header.",
                           code="unsupported_content_encoding")
    value = encodings[0].lower()
    if value != "identity" and value not in _DECODED_ENCODINGS:
        raise SidecarError(
            415, f"Unsupported Content-Encoding (supported: identity, "
            f"{', '.join(sorted(_DECODED_ENCODINGS))}).", code="unsupported_content_encoding")


def _unreadable_body() -> SidecarError:
    return SidecarError(400, "The request body could not be read: it is truncated or its "
                        "Content-Encoding does not match its bytes.", code="invalid_body")


def _printable(raw: str) -> str:
    """A refused request target as it may appear in logs: bounded, control characters
    escaped."""
    return "".join(ch if " " < ch < "\x7f" else f"\\x{ord(ch):02x}" for ch in raw[:256])


_now = time.perf_counter


__all__ = ["HOP_BY_HOP", "Forwarder", "Usage"]
