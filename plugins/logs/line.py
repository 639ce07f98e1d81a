"""Access lines encoded straight to bytes, from pieces that repeat across requests.

Most of an access line is the same from one request to the next: the time up to the second,
level and logger; method, path and operation; who called; the model, status, upstream status
and attempts. Those pieces are encoded once and kept (a bounded number of them). What differs
per request (ids, tokens, durations, sizes, the fields plugins added in ``ctx.log``) is
encoded in one ``orjson`` call. The result is the JSON object
:func:`plugins.logs.access_fields` describes, for a fraction of the work, which is what makes
an access line per request affordable at thousands of requests per second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from proxy.timefmt import utc_date_time

if TYPE_CHECKING:
    from proxy.context import RequestContext, Usage

#: Whether a piece of an encoded line (ASCII JSON text) may hold a secret (then the line is
#: encoded and redacted by the general path instead).
Suspicious = Callable[[str], bool]

#: Cached pieces per kind; beyond this (ids in paths, many keys) lines are
#: encoded without caching their piece, so memory stays bounded whatever the traffic.
CACHE_LIMIT = 512

#: ``.mmmZ"`` for every millisecond, ready to follow the seconds.
_MILLIS = tuple(b'.%03dZ"' % n for n in range(1000))
_DEFAULT_ORG = "default"
_INFO = b',"level":"INFO","logger":'
_WARNING = b',"level":"WARNING","logger":'
#: Stands for a cached piece that may hold a secret or is not ASCII: lines with it take the
#: general path.
_SUSPICIOUS = b"\x00suspicious"
#: Every field the line itself may have. A plugin's ``ctx.log`` entry of the same name sends
#: the line to the general path, which gives the line's own field precedence.
OWN_FIELDS = frozenset({
    "time", "level", "logger", "message", "request_id", "method", "path", "operation",
    "stream", "owner", "role", "key_id", "org", "agent_id", "conversation_id", "model",
    "status", "upstream_status", "attempts", "prompt_tokens", "completion_tokens",
    "total_tokens", "duration_ms", "upstream_ms", "ttfb_ms", "ttft_ms", "bytes",
    "request_bytes"})

def request_fields(method: str, path: str, status: int | None, operation: str,
                   stream: bool) -> dict[str, Any]:
    """What a line says about the request itself: message, method, path, operation and
    whether it streamed."""
    fields: dict[str, Any] = {
        "message": f"{method} {path} {status if status is not None else '-'}",
        "method": method, "path": path, "operation": operation}
    if stream:
        fields["stream"] = True
    return fields


def caller_fields(owner: str, role: str, key_id: str, org: str) -> dict[str, Any]:
    """What a line says about the caller (the organisation only when not the default)."""
    fields = {"owner": owner, "role": role, "key_id": key_id}
    if org != _DEFAULT_ORG:
        fields["org"] = org
    return fields


def utc_time(seconds: float) -> str:
    """Unix ``seconds`` as a line's ``time``: ``2025-01-31T12:00:00.123Z`` (UTC, milliseconds)."""
    second = int(seconds)
    return f"{utc_date_time(second)}.{int((seconds - second) * 1000):03d}Z"


def named_in(ctx: RequestContext, status: int | None) -> tuple[Any, Any, Any, Usage | None]:
    """The agent, conversation and model ``ctx`` names, and its token usage (answers below
    400 only): from the path first, then the response (already parsed for usage); the
    request body only when they do not name the model (conversations, errors)."""
    params = ctx.path_params
    agent_id = conversation_id = model = usage = None
    if params:
        agent_id = params.get("agent_id")
        conversation_id = params.get("conversation_id")
    body = ctx.response_json if status is not None and status < 400 else None
    if type(body) is dict:
        model = body.get("model")
        if agent_id is None:
            agent_id = body.get("agent_id")
            if not agent_id:
                operation = ctx.operation
                if operation is not None and operation.name == "agents.create":
                    agent_id = body.get("id")
        if conversation_id is None:
            conversation_id = body.get("conversation_id")
        usage = ctx.usage
    if not model:
        ids = ctx.resource_ids
        model = ids.get("model")
        agent_id = agent_id or ids.get("agent_id")
    return agent_id, conversation_id, model, usage


def outcome_fields(model: Any, status: int | None, upstream_status: int | None,
                   attempts: int) -> dict[str, Any]:
    """What a line says about the outcome that many requests share: model, status, upstream
    status and attempts (``None`` and empty values left out)."""
    fields: dict[str, Any] = {"model": model} if model else {}
    fields["status"] = status
    if upstream_status is not None:
        fields["upstream_status"] = upstream_status
    fields["attempts"] = attempts
    return fields


def add_measures(ctx: RequestContext, agent_id: Any, conversation_id: Any,
                 usage: Usage | None, into: dict[str, Any]) -> None:
    """Add what differs on every line to ``into``: request id, the agent and conversation,
    tokens, durations and sizes (``None`` and empty values left out)."""
    into["request_id"] = ctx.request_id
    if agent_id:
        into["agent_id"] = agent_id
    if conversation_id:
        into["conversation_id"] = conversation_id
    if usage is not None:
        into["prompt_tokens"] = usage.prompt_tokens
        into["completion_tokens"] = usage.completion_tokens
        into["total_tokens"] = usage.total_tokens
    timing = ctx.timing
    started = timing.started
    finished = timing.finished
    if finished is None:
        finished = time.perf_counter()
    # Milliseconds with three decimals, rounded half up: whole microseconds by floor division
    # (no call, unlike int() or round()), then exactly divided.
    into["duration_ms"] = ((finished - started) * 1e6 + 0.5) // 1 / 1000
    upstream_started = timing.upstream_started
    if upstream_started is not None:
        into["upstream_ms"] = ((finished - upstream_started) * 1e6 + 0.5) // 1 / 1000
    first_byte = timing.first_byte_sent
    if first_byte is not None:
        into["ttfb_ms"] = ((first_byte - started) * 1e6 + 0.5) // 1 / 1000
    first_token = timing.first_token
    if first_token is not None:
        into["ttft_ms"] = ((first_token - started) * 1e6 + 0.5) // 1 / 1000
    into["bytes"] = ctx.response_bytes
    body = ctx.body
    if body is not None:
        into["request_bytes"] = len(body)


def add_request_fields(ctx: RequestContext, status: int | None, into: dict[str, Any]) -> None:
    """Add the fields of ``ctx``'s line that are not about the request itself or its caller
    to ``into``: model, status, upstream status, attempts, then request id, agent,
    conversation, tokens, durations and sizes (``None`` and empty values left out)."""
    agent_id, conversation_id, model, usage = named_in(ctx, status)
    into.update(outcome_fields(model, status, ctx.upstream_status, ctx.attempts))
    add_measures(ctx, agent_id, conversation_id, usage, into)


class AccessLineEncoder:
    """Encodes the access line of a finished request as compact JSON bytes (no newline).

    ``None`` from :meth:`encode` means the line needs the general encoder: it holds text
    that is not ASCII (the general path escapes it as ``\\u`` sequences), values it does not
    format, plugin fields named like its own or set to ``None``, or something ``suspicious``
    (a possible secret, which the general path redacts). Each cached piece is checked once,
    when it is made; the per-request text on every line.
    """

    def __init__(self, logger_name: str, suspicious: Suspicious) -> None:
        logger = orjson.dumps(logger_name)
        self._levels = {False: _INFO + logger, True: _WARNING + logger}
        self._suspicious = suspicious
        self._second = -1
        self._second_text = b""
        self._prefixes: dict[tuple[Any, ...], bytes] = {}

    def _seconds(self, second: int) -> bytes:
        text = b'{"time":"' + utc_date_time(second).encode()
        self._second, self._second_text = second, text
        return text

    def _prefix(self, key: tuple[Any, ...]) -> bytes:
        """What follows the time in lines with ``key``: level, logger, the request's method,
        path and operation, the caller, the shared outcome, and a comma; or
        :data:`_SUSPICIOUS` when such lines need the general path."""
        method, path, status, operation, stream, warning, model, upstream_status, attempts = \
            key[:9]
        fields = request_fields(method, path, status, operation, stream)
        if len(key) > 9:
            fields.update(caller_fields(*key[9:]))
        fields.update(outcome_fields(model, status, upstream_status, attempts))
        piece = b"," + orjson.dumps(fields)[1:-1]
        if not piece.isascii() or self._suspicious(piece.decode("ascii")):
            piece = _SUSPICIOUS
        else:
            piece = self._levels[warning] + piece + b","
        if len(self._prefixes) < CACHE_LIMIT:
            self._prefixes[key] = piece
        return piece

    def encode(self, ctx: RequestContext, ended: float, warning: bool) -> bytes | None:
        """The line of ``ctx``, which finished at ``ended`` (``time.time()``); ``warning``
        gives it level WARNING instead of INFO."""
        status = ctx.response_status
        log = ctx.log
        if status is None or (log and not OWN_FIELDS.isdisjoint(log)):
            return None
        agent_id, conversation_id, model, usage = named_in(ctx, status)
        if model and type(model) is not str:
            return None
        operation = ctx.operation
        name = "unknown" if operation is None else operation.name
        identity = ctx.identity
        # Everything a line has that many requests share, as one key: method, path, status,
        # operation, model, upstream status, attempts and the caller. Written out twice rather
        # than joined: one tuple instead of three on every line.
        key: tuple[Any, ...] = (
            (ctx.method, ctx.path, status, name, ctx.is_stream, warning, model,
             ctx.upstream_status, ctx.attempts)
            if identity is None else
            (ctx.method, ctx.path, status, name, ctx.is_stream, warning, model,
             ctx.upstream_status, ctx.attempts,
             identity.owner, identity.role, identity.key_id, identity.org))
        prefix = self._prefixes.get(key) or self._prefix(key)
        if prefix is _SUSPICIOUS:
            return None
        # Plugins' fields first: the line's own per-request fields are written after them.
        rest: dict[str, Any] = dict(log) if log else {}
        add_measures(ctx, agent_id, conversation_id, usage, rest)
        try:
            tail = orjson.dumps(rest)
            # Searched as text: bytes.__contains__ first tries its argument as an integer and
            # pays for a formatted TypeError every time. The line's own fields are never
            # null, so a null is a plugin's field the general path leaves out.
            text = tail.decode("ascii")
            if '":null' in text or self._suspicious(text):
                return None
        except (TypeError, UnicodeDecodeError):  # a value orjson does not take, or not ASCII
            return None
        second = int(ended)
        return b"".join((
            self._second_text if second == self._second else self._seconds(second),
            _MILLIS[int((ended - second) * 1000)], prefix, tail[1:]))
