"""The response cache: identical deterministic requests answered without calling upstream.

With ``cache.enabled``, requests of ``cache.operations`` (chat and FIM completions,
embeddings) from the keys in ``cache.keys`` (every key when empty) are looked up under a
key derived from the caller's organisation, the operation and the canonical request body
(:mod:`plugins.cache.keys`); an organisation never sees another's answers, and a caller
with no known organisation is never cached (the plugin must come after ``auth`` in the
chain, so a caller that may not call the operation is refused before the cache is asked).
Which requests qualify and what the caller's ``Cache-Control`` does is
:mod:`plugins.cache.policy`.

A hit is answered in ``on_request`` with ``X-Sidecar-Cache: hit`` and an ``Age``, as JSON or,
for a streamed request, as the event stream a streamed call would have carried
(:mod:`plugins.cache.render`); upstream is not called and ``ctx.usage`` is zero, so the
token budget, usage records and token metrics count nothing for it. Every other request it
considered carries ``X-Sidecar-Cache: miss``, and its answer is stored in ``on_end`` when
upstream answered 200 with a complete body relayed in full (never an error, a cut-off
stream, a failed generation or another model's answer), at most ``cache.max_entry_bytes``,
for ``cache.ttl_seconds``. An answer reassembled from a stream is given again only as a
stream: it never went through the hooks that rewrite JSON answers (the output guard's
redaction).

Entries live in Redis when ``redis.host`` is set (shared by every replica; the ``redis.*``
settings are the core's), else in an in-process LRU of ``cache.max_entries``.
A failing Redis costs a request at most ``redis.timeout_ms`` and is then left alone for a
second: lookups are misses, answers go unstored, requests are never failed by the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from plugins.cache.backend import Backend, BackendUnavailable
from plugins.cache.complete import is_complete
from plugins.cache.config import CacheConfig, settings
from plugins.cache.entry import Entry
from plugins.cache.events import BACKEND_ERROR, EVENTS, HIT, MISS
from plugins.cache.keys import cache_key
from plugins.cache.memory import MemoryBackend
from plugins.cache.policy import directives, is_deterministic, upstream_forbids_storing
from plugins.cache.redis_backend import RedisBackend
from plugins.cache.render import completion_as_sse
from proxy import hookimpl, jsoncodec
from proxy.app import SETTINGS
from proxy.context import Outcome, RequestContext, UpstreamResponse
from proxy.event_registry import EventSpec
from proxy.events import emitter
from proxy.settings import Setting

__all__ = ["CACHE", "HEADER", "CacheState"]

#: The response header saying where the answer came from: ``hit`` or ``miss``.
HEADER = "X-Sidecar-Cache"
_STATE = "cache"
_NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

Reporter = Callable[[RequestContext | None, dict[str, Any]], None]


@dataclass(slots=True)
class CacheState:
    """What the plugin keeps on the application."""

    config: CacheConfig
    backend: Backend
    #: The sidecar's own upstream keys: a caller sending another (passthrough) shares
    #: answers only with callers of that same key.
    own_upstream_keys: frozenset[str]
    #: Wall-clock seconds, for the age of entries (which replicas share through Redis).
    wall: Callable[[], float] = time.time
    report_hit: Reporter | None = None
    report_miss: Reporter | None = None
    report_error: Reporter | None = None
    #: Entries being written to a store that is not in process.
    writes: set[asyncio.Task[None]] = field(default_factory=set)


#: Answers are shared by organisation, which auth establishes; and a caller auth refuses must
#: be refused before the cache could answer it.
requires = ("auth",)

CACHE = web.AppKey("cache_state", CacheState)
"""The plugin's :class:`CacheState`; absent while ``cache.enabled`` is false."""


@dataclass(slots=True)
class _Pending:
    """A request whose answer may be stored (``ctx.state["cache"]``)."""

    key: str
    operation: str
    #: The model the body named when the key was made.
    model: Any


@hookimpl
def sidecar_settings() -> list[Setting]:
    """``cache.enabled``, ``cache.operations``, ``cache.keys``, ``cache.ttl_seconds``,
    ``cache.max_entries``, ``cache.max_entry_bytes``."""
    return settings()


@hookimpl
def sidecar_events(app: web.Application) -> list[EventSpec]:
    """``cache.hit``, ``cache.miss`` and ``cache.backend_error``."""
    return EVENTS


@hookimpl
def startup(app: web.Application) -> None:
    """Open the store: Redis when ``redis.host`` is set, else in process."""
    values = app[SETTINGS]
    if not values["cache.enabled"]:
        return
    config = CacheConfig.from_settings(values)
    backend: Backend
    if values["redis.host"]:
        backend = RedisBackend(
            str(values["redis.host"]), int(values["redis.port"]),
            str(values["redis.prefix"]), max_entries=config.max_entries,
            timeout=int(values["redis.timeout_ms"]) / 1000,
            password=str(values["redis.password"]), db=int(values["redis.db"]))
    else:
        backend = MemoryBackend(config.max_entries)
    app[CACHE] = CacheState(
        config, backend, frozenset(values.get("upstream.api_key") or ()),
        report_hit=emitter(app, HIT), report_miss=emitter(app, MISS),
        report_error=emitter(app, BACKEND_ERROR))


@hookimpl
def shutdown(app: web.Application) -> Awaitable[None] | None:
    """Finish the writes under way and close the store."""
    state = app.get(CACHE)
    if state is None:
        return None

    async def stop() -> None:
        if state.writes:
            await asyncio.gather(*state.writes, return_exceptions=True)
        await state.backend.close()

    return stop()


@hookimpl
def readiness(app: web.Application) -> Awaitable[dict[str, Any]] | None:
    """``cache``: the store in use and whether it answers; never unready (a cache outage
    only costs upstream calls)."""
    state = app.get(CACHE)
    if state is None:
        return None

    async def check() -> dict[str, Any]:
        return {"cache": {"backend": state.backend.name, **await state.backend.health()}}

    return check()


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """``cache_entries``: answers held in this process (in-process store only)."""
    state = app.get(CACHE)
    if state is None or not isinstance(state.backend, MemoryBackend):
        return None
    return [("cache_entries", {}, float(len(state.backend)))]


@hookimpl
def on_request(ctx: RequestContext) -> Awaitable[web.Response | None] | None:
    """Answer from the cache when the caller's organisation has a live answer to this very
    request; otherwise mark it a miss and remember whether its answer may be stored."""
    state = ctx.app.get(CACHE)
    if state is None:
        return None
    operation = ctx.operation_name.removesuffix("_stream")
    if operation not in state.config.operations:
        return None
    identity = ctx.identity
    if state.config.keys and (identity is None or identity.key_id not in state.config.keys):
        return None
    ctx.response_headers[HEADER] = "miss"
    scope = _scope(ctx, state)
    body = ctx.json
    asked = directives(ctx.request.headers)
    if scope is None:
        reason = "no_org"
    elif not isinstance(body, dict):
        reason = "no_json"
    elif not (asked.force or is_deterministic(operation, body)):
        reason = "sampling"
    else:
        key = cache_key(scope, operation, ctx.path, ctx.query_string, body)
        if asked.store:
            ctx.state[_STATE] = _Pending(key, operation, body.get("model"))
        if asked.lookup:
            return _lookup(ctx, state, operation, key, asked.max_age)
        reason = "no_cache"
    _miss(ctx, state, operation, reason)
    return None


def _scope(ctx: RequestContext, state: CacheState) -> tuple[str, ...] | None:
    """Who may share this request's answers: its organisation, narrowed to callers of the
    same upstream key when the caller brought its own. ``None`` when the caller is unknown."""
    identity = ctx.identity
    if identity is None or not identity.org:
        return None
    upstream_key = ctx.upstream_api_key
    if upstream_key and upstream_key not in state.own_upstream_keys:
        return (identity.org, hashlib.sha256(upstream_key.encode()).hexdigest())
    return (identity.org,)


async def _lookup(ctx: RequestContext, state: CacheState, operation: str, key: str,
                  max_age: float | None) -> web.Response | None:
    try:
        entry = await state.backend.get(key)
    except BackendUnavailable as failure:
        _backend_error(ctx, state, "get", failure)
        entry, reason = None, "unavailable"
    else:
        reason = "not_found"
    answer = None
    if entry is not None:
        age = max(0.0, state.wall() - entry.stored_at)
        if max_age is not None and age > max_age:
            reason = "stale"
        elif entry.stream and not ctx.is_stream:
            reason = "stream_only"
        else:
            answer = _answer(ctx, operation, entry, age)
            reason = "unreadable"
    if answer is None:
        _miss(ctx, state, operation, reason)
        return None
    ctx.log["cache"] = "hit"
    if state.report_hit is not None:
        state.report_hit(ctx, {"operation": operation, "backend": state.backend.name})
    return answer


def _answer(ctx: RequestContext, operation: str, entry: Entry, age: float
            ) -> web.Response | None:
    """The response giving ``entry`` again, ``None`` when it cannot be read as this
    request's answer."""
    try:
        answer = jsoncodec.loads(entry.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not is_complete(operation, answer):
        return None
    if ctx.is_stream:
        if operation == "embeddings.create":
            return None
        body = completion_as_sse(answer)
        content_type = "text/event-stream"
    else:
        body = entry.body
        content_type = "application/json"
    # Observers see the answer with a usage of zero: a hit costs nothing, and whatever
    # counts tokens (the budget, usage records, token metrics) reads ctx.usage, which comes
    # from here. The caller gets the stored answer as it was.
    ctx.response_json = {**answer, "usage": dict(_NO_USAGE)}
    ctx.response_bytes = len(body)
    headers = dict(ctx.response_headers)
    headers.update({"Content-Type": content_type, "X-Request-ID": ctx.request_id,
                    HEADER: "hit", "Age": str(int(age))})
    return web.Response(status=200, body=body, headers=headers)


def _miss(ctx: RequestContext, state: CacheState, operation: str, reason: str) -> None:
    ctx.log["cache"] = "miss"
    ctx.log["cache_miss"] = reason
    if state.report_miss is not None:
        state.report_miss(ctx, {"operation": operation, "reason": reason})


def _backend_error(ctx: RequestContext | None, state: CacheState, action: str,
                   failure: BackendUnavailable) -> None:
    # While resting after a failure the store is not called: nothing new to report.
    if failure.reason != "resting" and state.report_error is not None:
        state.report_error(ctx, {"action": action, "reason": failure.reason})


@hookimpl
def on_response(ctx: RequestContext, response: UpstreamResponse) -> None:
    """Upstream's ``Cache-Control: no-store`` keeps its answer out of the cache."""
    if _STATE in ctx.state and upstream_forbids_storing(
            response.headers.get("Cache-Control", "")):
        del ctx.state[_STATE]


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Store the answer if upstream gave a complete 200 that reached the caller in full."""
    pending: _Pending | None = ctx.state.get(_STATE)
    if pending is None or ctx.outcome is not Outcome.OK or ctx.upstream_status != 200 \
            or ctx.response_status != 200:
        return
    state = ctx.app[CACHE]
    sent = ctx.json
    if isinstance(sent, dict) and sent.get("model") != pending.model:
        # Another model answered (the fallback plugin's): not the answer to the request
        # the key stands for, and likely a degraded one.
        ctx.log["cache_store"] = "model_changed"
        return
    answer = ctx.response_json
    if not is_complete(pending.operation, answer):
        ctx.log["cache_store"] = "incomplete"
        return
    body = _stored_body(ctx, answer)
    if len(body) > state.config.max_entry_bytes:
        ctx.log["cache_store"] = "too_large"
        return
    entry = Entry(body, ctx.is_stream, state.wall())
    ctx.log["cache_store"] = "stored"
    if isinstance(state.backend, MemoryBackend):
        state.backend.store(pending.key, entry, state.config.ttl)
        return
    # Off the request path: the caller's answer does not wait for a remote store.
    task = asyncio.get_running_loop().create_task(_put(state, pending.key, entry))
    state.writes.add(task)
    task.add_done_callback(state.writes.discard)


def _stored_body(ctx: RequestContext, answer: Any) -> bytes:
    """The answer as the caller received it: upstream's bytes when they were relayed
    unchanged, else the (reassembled or rewritten) JSON."""
    if not ctx.is_stream and not ctx.buffer_response and ctx.response_body is not None:
        return ctx.response_body
    return jsoncodec.dumps_bytes(answer)


async def _put(state: CacheState, key: str, entry: Entry) -> None:
    try:
        await state.backend.put(key, entry, state.config.ttl)
    except BackendUnavailable as failure:
        _backend_error(None, state, "put", failure)
