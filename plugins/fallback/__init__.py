"""The fallback plugin: when a model fails, ask the next one configured for it.

``SIDECAR_FALLBACK_MODELS`` maps a model to the models to try instead, in order
(:mod:`plugins.fallback.table`). A request naming a configured model in its JSON body goes to
the next model when upstream answers 429 or 5xx, or does not answer before its headers
(timeout), after the retry plugin gave up: place ``fallback`` before ``retry`` in the chain,
so that it wraps it. The request is sent again with only ``model`` changed. The caller gets
the first answer that is not a failure, or the last model's failure unchanged.

What falls back: model calls whose body names a model (chat and FIM completions, streamed or
not, embeddings, classifiers and moderation, OCR, speech). A stream falls back only while
its status is still unknown: once ``wrap_upstream`` returned, bytes may flow to the caller,
so a stream that breaks later stays broken. Conversations (``conversations.start`` with a
``model``, and the other conversation calls when their body names one) fall back only with
``SIDECAR_FALLBACK_AGENTS=true``: the conversation is stored upstream with the model that
answered, and later turns continue with it. Being stateful, they fall back only when upstream
certainly did nothing (429, 503), never after a timeout or another 5xx. Requests naming an
agent (``agent_id``: agent completions, agent conversations) never fall back: the agent
chooses its model.

Every answer to a model call carries ``X-Sidecar-Model``, the model the request that
answered named (with fallback on). The request body, and so usage records, metrics, tracing
and the token budget, are those of the model that answered. Each switch reports the event
``fallback.used`` {from_model, to_model, status, reason}.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from plugins.fallback.table import FallbackTable, problems
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.errors import UpstreamError
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emit
from proxy.settings import Setting, Settings

__all__ = ["CONVERSATION_OPERATIONS", "EVENTS", "FALLBACK", "MODEL_HEADER", "MODEL_OPERATIONS",
           "Fallback"]

MODEL_HEADER = "X-Sidecar-Model"

#: Stateless calls answered by the model their body names.
MODEL_OPERATIONS = frozenset({
    "chat.complete",
    "fim.complete",
    "embeddings.create",
    "classifiers.classify",
    "classifiers.classify_chat",
    "classifiers.moderate",
    "classifiers.moderate_chat",
    "ocr.process",
    "audio.speech.complete",
})
#: Conversation calls: they create state upstream, and fall back only when configured.
CONVERSATION_OPERATIONS = frozenset({
    "conversations.start", "conversations.start_stream",
    "conversations.append", "conversations.append_stream",
    "conversations.restart", "conversations.restart_stream",
})
#: Statuses that prove upstream did nothing with the request (as the retry plugin reads them).
_NOT_ACTED_ON = frozenset({429, 503})
#: ``ctx.state`` key: the model the request being sent names (``None``: none), as
#: ``wrap_upstream`` found it and ``_switch`` changed it, for ``on_response``.
_MODEL = "fallback_model"


@dataclass(frozen=True, slots=True)
class Fallback:
    """The plugin's configuration, resolved at start-up."""

    table: FallbackTable
    agents: bool
    total_timeout: float

    def time_left(self, ctx: RequestContext) -> bool:
        """Whether the request may still make an upstream attempt (the core's total timeout
        applies to all of them together)."""
        return time.perf_counter() - ctx.timing.started < self.total_timeout


FALLBACK = web.AppKey("fallback_config", Fallback)

#: The events this plugin emits.
EVENTS = (
    EventSpec("fallback.used", "A model failed and the request is sent to its next fallback.",
              fields=("from_model", "to_model", "status", "reason"), level="WARNING",
              metrics=(EventMetric("fallbacks",
                                   "Requests sent on to a fallback model, by the model that "
                                   "failed and the model tried next.",
                                   ("from_model", "to_model")),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """The fallback table and whether conversations use it."""
    return [
        Setting("fallback.models", "data", {},
                "Model -> ordered list of models to try when it answers 429 or 5xx or times "
                "out (JSON in the environment); empty turns fallback off."),
        Setting("fallback.agents", "bool", False,
                "Let conversation calls that name a model fall back too (only on 429 and "
                "503); the conversation then continues with the model that answered."),
    ]


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """A mapping of model names to non-empty lists of other models, without cycles."""
    setting = settings.declared.get("fallback.models")
    where = setting.describe_source() if setting is not None else "fallback.models"
    return [f"{where}: {problem}" for problem in problems(settings.get("fallback.models"))]


@hookimpl
def startup(app: web.Application) -> None:
    """Resolve each configured model's fallbacks; nothing to do when none are configured."""
    settings = app[SETTINGS]
    table = FallbackTable(settings["fallback.models"])
    if table:
        app[FALLBACK] = Fallback(table, bool(settings["fallback.agents"]),
                                 float(settings["upstream.total_timeout_seconds"]))


def _requested_model(ctx: RequestContext) -> str | None:
    """The model the request body names, for the calls a model answers."""
    name = ctx.operation_name
    if name not in MODEL_OPERATIONS and name not in CONVERSATION_OPERATIONS:
        return None
    # Spare parsing bodies that cannot name a model.
    if not ctx.body or b'"model"' not in ctx.body:
        return None
    body = ctx.json
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


def _failure(ctx: RequestContext, status: int | None, error: UpstreamError | None) -> str | None:
    """Why this attempt counts as the model failing (``http_503``, ``timeout``), or
    ``None`` when its answer goes to the caller as it is."""
    if ctx.operation_name in CONVERSATION_OPERATIONS:
        return f"http_{status}" if status in _NOT_ACTED_ON else None
    if error is not None:
        return "timeout" if error.reason == "timeout" else None
    assert status is not None
    return f"http_{status}" if status == 429 or 500 <= status <= 599 else None


def _switch(ctx: RequestContext, from_model: str, to_model: str, status: int | None,
            reason: str) -> None:
    """Send the next attempt to ``to_model``: only the body's ``model`` changes."""
    body: dict[str, Any] = dict(ctx.json)
    body["model"] = to_model
    ctx.set_json(body)
    # Policies and observers read the model from the resource ids too, which are computed
    # once: update them in place.
    ctx.resource_ids["model"] = to_model
    ctx.state[_MODEL] = to_model
    ctx.log.setdefault("fallback_from", from_model)
    emit(ctx.app, "fallback.used", ctx, from_model=from_model, to_model=to_model,
         status=status, reason=reason)


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall | None:
    """Around the retries: when the model failed, try its fallbacks in order."""
    config = ctx.app.get(FALLBACK)
    if config is None:
        return None
    model = ctx.state[_MODEL] = _requested_model(ctx)
    if ctx.operation_name in CONVERSATION_OPERATIONS and not config.agents:
        return None
    fallbacks = config.table.fallbacks(model) if model is not None else ()
    if not fallbacks:
        return None
    assert model is not None

    async def with_fallbacks(ctx: RequestContext) -> UpstreamResponse:
        current = model
        for following in fallbacks:
            try:
                response = await call(ctx)
            except UpstreamError as error:
                reason = _failure(ctx, None, error)
                if reason is None or not config.time_left(ctx):
                    raise
                status = None
            else:
                status = response.status
                reason = _failure(ctx, status, None)
                if reason is None or not config.time_left(ctx):
                    return response
                await response.release()
            _switch(ctx, current, following, status, reason)
            current = following
        return await call(ctx)

    return with_fallbacks


@hookimpl
def on_response(ctx: RequestContext) -> None:
    """Tell the caller which model answered: the one the request that got this answer
    named."""
    if FALLBACK not in ctx.app:
        return
    # Found once, by wrap_upstream, which runs before the request is sent: finding it
    # again scanned and read the body on every request (callgrind, bench_ab's chat
    # request: the plugin's own cost went from 39 k to 21 k instructions per request).
    model = ctx.state[_MODEL] if _MODEL in ctx.state else _requested_model(ctx)
    if model is not None:
        ctx.response_headers[MODEL_HEADER] = model

