"""The fields of an access line (one per request) and of an event line (one per plugin event)."""

from __future__ import annotations

import time
from typing import Any

from proxy.context import RequestContext, Usage

_DEFAULT_ORG = "default"



def access_fields(ctx: RequestContext, content: bool = False,
                  content_max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """The fields of ``ctx``'s access line: the request, who called, the outcome, tokens,
    timing and sizes (empty ones left out, ``status`` always there), then every field
    plugins put in ``ctx.log`` (the line's own fields win, ``None`` is left out) and, with
    ``content``, the request and response bodies."""
    status = ctx.response_status
    fields: dict[str, Any] = {
        "message": f"{ctx.method} {ctx.path} {status if status is not None else '-'}",
        "method": ctx.method, "path": ctx.path, "operation": ctx.operation_name}
    if ctx.is_stream:
        fields["stream"] = True
    identity = ctx.identity
    if identity is not None:
        fields.update(owner=identity.owner, role=identity.role, key_id=identity.key_id)
        if identity.org != _DEFAULT_ORG:
            fields["org"] = identity.org
    agent_id, conversation_id, model, usage = _named_in(ctx, status)
    if model:
        fields["model"] = model
    fields["status"] = status
    if ctx.upstream_status is not None:
        fields["upstream_status"] = ctx.upstream_status
    fields["attempts"] = ctx.attempts
    fields["request_id"] = ctx.request_id
    if agent_id:
        fields["agent_id"] = agent_id
    if conversation_id:
        fields["conversation_id"] = conversation_id
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
        fields["total_tokens"] = usage.total_tokens
        if usage.estimated:
            fields["usage_estimated"] = True
    _add_timing(ctx, fields)
    fields["bytes"] = ctx.response_bytes
    if ctx.body is not None:
        fields["request_bytes"] = len(ctx.body)
    for key, value in ctx.log.items():
        if value is not None:
            fields.setdefault(key, value)
    if content:
        _add_content(ctx, content_max_bytes, fields)
    return fields


def _named_in(ctx: RequestContext, status: int | None) -> tuple[Any, Any, Any, Usage | None]:
    """The agent, conversation and model ``ctx`` names, and its token usage (answers below
    400, and requests left before any answer): from the path first, then the response; the
    request body only when those do not name the model (conversations, errors)."""
    params = ctx.path_params or {}
    agent_id = params.get("agent_id")
    conversation_id = params.get("conversation_id")
    model = usage = None
    body = ctx.response_json if status is not None and status < 400 else None
    if isinstance(body, dict):
        model = body.get("model")
        if agent_id is None:
            agent_id = body.get("agent_id")
            if not agent_id and ctx.operation_name == "agents.create":
                agent_id = body.get("id")
        if conversation_id is None:
            conversation_id = body.get("conversation_id")
        usage = ctx.usage
    elif status is None:
        # Gone before any answer: what usage there is, is the sidecar's estimate.
        usage = ctx.usage
    if not model:
        ids = ctx.resource_ids
        model = ids.get("model")
        agent_id = agent_id or ids.get("agent_id")
    return agent_id, conversation_id, model, usage


def _add_timing(ctx: RequestContext, fields: dict[str, Any]) -> None:
    """Milliseconds (three decimals) from arrival, and from the first upstream call, to the
    end; to the first byte and the first token sent, when there were any."""
    timing = ctx.timing
    finished = timing.finished if timing.finished is not None else time.perf_counter()
    fields["duration_ms"] = _ms(timing.started, finished)
    if timing.upstream_started is not None:
        fields["upstream_ms"] = _ms(timing.upstream_started, finished)
    if timing.first_byte_sent is not None:
        fields["ttfb_ms"] = _ms(timing.started, timing.first_byte_sent)
    if timing.first_token is not None:
        fields["ttft_ms"] = _ms(timing.started, timing.first_token)


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)


def _add_content(ctx: RequestContext, limit: int, fields: dict[str, Any]) -> None:
    """The bodies, parsed; as truncated text when larger than ``limit`` bytes."""
    if ctx.body is not None:
        if len(ctx.body) <= limit and ctx.json is not None:
            fields["request_body"] = ctx.json
        else:
            fields["request_body_truncated"] = ctx.body[:limit].decode("utf-8", "replace")
    response = ctx.response_json
    if response is not None:
        if ctx.response_bytes <= limit:
            fields["response_body"] = response
        else:
            fields["response_body_truncated"] = str(response)[:limit]


def event_fields(ctx: RequestContext | None, name: str, fields: dict[str, Any]
                 ) -> dict[str, Any]:
    """The fields of event ``name``'s line: its name (as ``message`` and ``event``), the
    request it belongs to, if any, then the event's own fields."""
    line: dict[str, Any] = {"message": name, "event": name}
    if ctx is not None:
        line["request_id"] = ctx.request_id
        line["operation"] = ctx.operation_name
    for key, value in fields.items():
        line.setdefault(key, value)
    return line
