"""The middleware chain: request log, error rendering, latency, faults, authentication.

Only ``/v1`` requests are logged, faulted, delayed and authenticated; the control API
under ``/__mock__`` is always answered straight away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from .connection import (
    CUT_AFTER_FRAMES,
    ClientGone,
    ConnectionDropped,
    abort,
    close_after_flush,
    sleep_unless_gone,
    wait_until_gone,
)
from .errors import ApiError, default_error_body, error_body, not_found, unauthorized
from .faults import take_fault
from .state import STATE_KEY, RequestRecord

log = logging.getLogger(__name__)

RECORD_KEY = web.RequestKey("mock_upstream_record", RequestRecord)


def is_api_path(path: str) -> bool:
    """Whether ``path`` belongs to the faked Mistral API (``/v1`` and below)."""
    return path == "/v1" or path.startswith("/v1/")


@web.middleware
async def record_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log the request, its outcome, and whether the client went away first."""
    if not is_api_path(request.path):
        return await handler(request)
    state = request.app[STATE_KEY]
    state.request_seq += 1
    record = RequestRecord(
        seq=state.request_seq,
        method=request.method,
        path=request.path,
        query_string=request.query_string,
        headers=[[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
    )
    request[RECORD_KEY] = record
    state.requests.append(record)
    state.stats[request.path] += 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        response = await handler(request)
        record.status = response.status
        record.completed = True
        return response
    except asyncio.CancelledError:
        record.cancelled = True
        raise
    except ClientGone:
        record.cancelled = True
        # Nobody is listening any more; aiohttp's attempt to write this fails quietly.
        return web.Response(status=499)
    except ConnectionDropped:
        # The connection is already closed: aiohttp's attempt to write this fails quietly.
        return web.Response(status=502)
    finally:
        record.duration_ms = round((loop.time() - started) * 1000, 3)
        # A body the handler never needed (e.g. under a fault) is reported by its declared
        # length; anything else by the bytes that actually arrived.
        unread = not request.content.is_eof() and not record.cancelled
        if unread and request.content_length is not None:
            record.body_size = request.content_length
        else:
            record.body_size = request.content.total_bytes


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render :class:`ApiError` and aiohttp's routing errors in Mistral's error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.to_response()
    except web.HTTPNotFound:
        return not_found().to_response()
    except web.HTTPMethodNotAllowed as exc:
        body = error_body("Method Not Allowed", "invalid_request_error", code="405")
        return web.json_response(
            body, status=405, headers={"Allow": ",".join(sorted(exc.allowed_methods))}
        )
    except web.HTTPException:
        raise
    except (ClientGone, ConnectionDropped, asyncio.CancelledError):
        raise
    except ConnectionError as exc:
        # Reading a body whose sender vanished, or writing to a closed socket.
        raise ClientGone from exc
    except Exception:
        log.exception("mock upstream handler failed")
        return web.json_response(default_error_body(500), status=500)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the first registered fault matching the request, consuming one use of it."""
    if not is_api_path(request.path):
        return await handler(request)
    state = request.app[STATE_KEY]
    # Only a fault aimed at a model needs the body read this early.
    model = await _body_model(request) if any(f.model for f in state.faults) else None
    fault = take_fault(state.faults, request.method, request.path, model)
    if fault is None:
        return await handler(request)
    request[RECORD_KEY].fault = fault.id
    if fault.action == "respond":
        body = fault.body if fault.body is not None else default_error_body(fault.status)
        raise ApiError(fault.status, body, fault.headers)
    if fault.action == "drop":
        abort(request)
        raise ConnectionDropped
    if fault.action == "stall":
        await wait_until_gone(request)
    if fault.action == "delay":
        await sleep_unless_gone(request, fault.delay_ms / 1000)
        return await handler(request)
    # cut_stream: SSE writers stop by themselves; plain answers are truncated here.
    request[CUT_AFTER_FRAMES] = fault.after_frames
    response = await handler(request)
    if isinstance(response, web.Response) and not response.prepared:
        await _send_truncated(request, response)
    return response


async def _body_model(request: web.Request) -> str | None:
    """The ``model`` a JSON request body names, if any (aiohttp keeps the body read here for
    the handler)."""
    if request.content_type != "application/json" or not request.body_exists:
        return None
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


async def _send_truncated(request: web.Request, response: web.Response) -> None:
    body = response.body if isinstance(response.body, bytes) else b""
    truncated = web.StreamResponse(status=response.status, headers=response.headers)
    truncated.content_length = len(body)
    await truncated.prepare(request)
    await truncated.write(body[: len(body) // 2])
    close_after_flush(request)
    raise ConnectionDropped


@web.middleware
async def latency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Delay every API answer by the current ``latency_ms`` setting."""
    if is_api_path(request.path):
        latency_ms = request.app[STATE_KEY].settings.latency_ms
        if latency_ms > 0:
            await sleep_unless_gone(request, latency_ms / 1000)
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require ``Authorization: Bearer <key>`` with an accepted key on API paths."""
    if is_api_path(request.path):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        keys = request.app[STATE_KEY].settings.api_keys
        if scheme.lower() != "bearer" or not token or (keys and token not in keys):
            raise unauthorized()
    return await handler(request)


async def add_api_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: the correlation header real API answers carry."""
    if is_api_path(request.path):
        response.headers.setdefault("mistral-correlation-id", str(uuid.uuid4()))
        record = request.get(RECORD_KEY)
        if record is not None:
            elapsed_ms = int((time.time() - record.started_at) * 1000)
            response.headers.setdefault("x-envoy-upstream-service-time", str(elapsed_ms))


@web.middleware
async def gzip_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With the ``gzip`` setting, JSON answers go gzip-compressed to callers that accept it."""
    response = await handler(request)
    if (request.app[STATE_KEY].settings.gzip and is_api_path(request.path)
            and "gzip" in request.headers.get("Accept-Encoding", "")
            and isinstance(response, web.Response)):
        response.enable_compression(web.ContentCoding.gzip)
    return response


# Latency comes before faults so that injected answers are delayed like real ones.
MIDDLEWARES = [
    gzip_middleware,
    record_middleware,
    error_middleware,
    latency_middleware,
    fault_middleware,
    auth_middleware,
]
