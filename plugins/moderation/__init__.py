"""The moderation plugin: Mistral's own classifier behind the input guard's patterns.

Before a request whose body the model reads goes upstream (chat, FIM and agent completions,
conversation start, append and restart, agent create and update: the fields the input guard
scans, see :mod:`plugins.moderation.texts`), its texts are classified by Mistral's
``/v1/moderations`` (``moderation.model``) on the sidecar's upstream session and key pool (see
:mod:`plugins.moderation.client` for why not through the ``wrap_upstream`` chain). A field
whose score reaches ``moderation.thresholds[category]`` in any category blocks the request:
400 ``moderation_flagged`` naming the categories and fields, never the text.

When the classifier cannot answer within ``moderation.timeout_seconds`` (timeout, connection
failure, an HTTP error, a malformed answer), ``moderation.failure_mode`` decides: ``closed``
answers 503 ``moderation_unavailable`` and sends nothing upstream, ``open`` lets the request
through. Results are cached per text (``moderation.cache_size``, ``moderation.cache_ttl_seconds``)
under a SHA-256 of model and text, so a conversation's history is classified once, not on
every turn. Texts longer than ``moderation.max_input_chars`` are classified in overlapping
pieces, the field scoring the highest score of its pieces.

Reports, never with text:

- event ``moderation.call`` {status: ok|timeout|unreachable|status|malformed, http_status,
  seconds, texts} for every call to the classifier;
- event ``moderation.decision`` {decision: allowed|blocked|failed_open|failed_closed,
  cached: whether no call was needed, categories: comma-separated, when blocked};
- gauges ``moderation_calls_total{status}``, ``moderation_call_seconds_total{status}``
  (this process's calls and their summed latency), ``moderation_cache_entries``;
- access-log fields ``moderation`` (the decision) and ``moderation_categories``;
- a WARNING line of ``mistral_sidecar.moderation`` for every block and every failure.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from plugins.moderation.cache import ScoreCache, text_key
from plugins.moderation.client import ModerationClient, ModerationUnavailable
from plugins.moderation.policy import DEFAULT_THRESHOLDS, check_thresholds, flagged, highest
from plugins.moderation.texts import pieces, request_texts
from proxy import hookimpl
from proxy.app import HTTP_SESSION, SETTINGS
from proxy.chain import CHAIN_SETTING
from proxy.context import RequestContext
from proxy.errors import SidecarError
from proxy.event_registry import EventSpec
from proxy.events import emitter
from proxy.settings import Setting, Settings

__all__ = ["FAILURE_MODES", "MODERATION", "ModerationState"]

logger = logging.getLogger("mistral_sidecar.moderation")

FAILURE_MODES = ("closed", "open")
#: Plugins that must run before this one when they are in the chain (by entry-point name and
#: module path): the caller must be authenticated before the sidecar spends a classifier
#: call on its request.
_BEFORE_ME = {"auth": ("auth", "plugins.auth")}

Reporter = Callable[[RequestContext | None, dict[str, Any]], None]


@dataclass
class ModerationState:
    """Configuration, client, cache and running totals of one application."""

    client: ModerationClient
    cache: ScoreCache
    thresholds: dict[str, float]
    failure_mode: str
    max_input_chars: int
    clock: Callable[[], float]
    #: Reporters of the two per-request events, made once (``None``: nobody observes them).
    report_call: Reporter | None = None
    report_decision: Reporter | None = None
    calls: Counter[str] = field(default_factory=Counter)
    call_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))


MODERATION = web.AppKey("moderation_state", ModerationState)


#: The events this plugin emits.
EVENTS = (
    EventSpec("moderation.call", "A call to the moderation classifier ended.",
              fields=("status", "http_status", "seconds", "texts")),
    EventSpec("moderation.decision", "Moderation allowed or blocked a request, or failed.",
              fields=("decision", "cached", "categories")),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Switch, model, thresholds, failure mode, timeout and cache."""
    return [
        Setting("moderation.enabled", "bool", False,
                "Classify the texts the model reads with Mistral's moderation endpoint "
                "before a request goes upstream."),
        Setting("moderation.model", "str", "mistral-moderation-latest",
                "Moderation model asked."),
        Setting("moderation.thresholds", "data", DEFAULT_THRESHOLDS,
                "Category -> score (0 to 1) from which a text blocks the request (400); "
                "categories not listed never block.",
                check=check_thresholds),
        Setting("moderation.failure_mode", "str", "closed",
                "When the classifier cannot answer in time: closed refuses the request "
                "(503), open lets it through (logged and counted).", choices=FAILURE_MODES),
        Setting("moderation.timeout_seconds", "float", 2.0,
                "Longest wait for the classifier's answer, key rotation included.",
                minimum=0.001),
        Setting("moderation.cache_size", "int", 10000,
                "Classified texts whose scores are remembered (by hash); 0 disables it.",
                minimum=0),
        Setting("moderation.cache_ttl_seconds", "float", 3600.0,
                "How long a text's scores are reused.", minimum=0),
        Setting("moderation.max_input_chars", "int", 20000,
                "Longer texts are classified in overlapping pieces of this many characters.",
                minimum=1000),
    ]


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """When enabled, run after authentication (unauthenticated calls cost nothing)."""
    if not settings["moderation.enabled"]:
        return []
    chain = [str(name) for name in settings["plugins.chain"]]
    mine = next((i for i, name in enumerate(chain)
                 if name in ("moderation", __name__)), None)
    if mine is None:
        return []
    later = set(chain[mine + 1:])
    return [f"{CHAIN_SETTING}: {name} must come before moderation"
            for name, spellings in _BEFORE_ME.items() if later.intersection(spellings)]


@hookimpl
def startup(app: web.Application) -> None:
    """Build the client on the upstream session, and the cache (nothing when disabled)."""
    settings = app[SETTINGS]
    if not settings["moderation.enabled"]:
        return
    clock = time.monotonic
    app[MODERATION] = ModerationState(
        client=ModerationClient(app[HTTP_SESSION], str(settings["upstream.base_url"]),
                                str(settings["moderation.model"]),
                                float(settings["moderation.timeout_seconds"]), time.time),
        cache=ScoreCache(int(settings["moderation.cache_size"]),
                         float(settings["moderation.cache_ttl_seconds"]), clock),
        thresholds={str(k): float(v) for k, v in settings["moderation.thresholds"].items()},
        failure_mode=str(settings["moderation.failure_mode"]),
        max_input_chars=int(settings["moderation.max_input_chars"]),
        clock=clock,
        report_call=emitter(app, "moderation.call"),
        report_decision=emitter(app, "moderation.decision"),
    )


@hookimpl
def on_request(ctx: RequestContext) -> Awaitable[None] | None:
    """Classify the request's texts; block what scores too high."""
    state = ctx.app.get(MODERATION)
    if state is None or ctx.operation is None:
        return None
    fields = [(path, text) for path, text in request_texts(ctx.operation.name, ctx.json)
              if text.strip()]
    if not fields:
        return None
    return _moderate(ctx, state, fields)


async def _moderate(ctx: RequestContext, state: ModerationState,
                    fields: list[tuple[str, str]]) -> None:
    model = state.client.model
    keyed = [(path, [(text_key(model, piece), piece)
                     for piece in pieces(text, state.max_input_chars)])
             for path, text in fields]
    known: dict[bytes, dict[str, float]] = {}
    missing: dict[bytes, str] = {}
    for _path, parts in keyed:
        for key, piece in parts:
            if key in known or key in missing:
                continue
            scores = state.cache.get(key)
            if scores is None:
                missing[key] = piece
            else:
                known[key] = scores
    if missing:
        try:
            results = await _call(ctx, state, list(missing.values()))
        except ModerationUnavailable as failure:
            _failed(ctx, state, failure)
            return
        for key, scores in zip(missing, results, strict=True):
            state.cache.put(key, scores)
            known[key] = scores
    hits: dict[str, list[str]] = {}
    for path, parts in keyed:
        for category in flagged(highest(known[key] for key, _ in parts), state.thresholds):
            hits.setdefault(category, []).append(path)
    _decide(ctx, state, hits, cached=not missing)


async def _call(ctx: RequestContext, state: ModerationState, texts: list[str]
                ) -> list[dict[str, float]]:
    started = state.clock()
    try:
        results = await state.client.classify(ctx, texts)
    except ModerationUnavailable as failure:
        _count_call(ctx, state, texts, state.clock() - started, failure.reason, failure.status)
        raise
    _count_call(ctx, state, texts, state.clock() - started, "ok", None)
    return results


def _count_call(ctx: RequestContext, state: ModerationState, texts: list[str], seconds: float,
                status: str, http_status: int | None) -> None:
    state.calls[status] += 1
    state.call_seconds[status] += seconds
    ctx.log["moderation_ms"] = round(seconds * 1000, 1)
    if state.report_call is not None:
        state.report_call(ctx, {"status": status, "http_status": http_status,
                                "seconds": round(seconds, 4), "texts": len(texts)})


def _report_decision(ctx: RequestContext, state: ModerationState, decision: str, *,
                     cached: bool, categories: str = "") -> None:
    ctx.log["moderation"] = decision
    if state.report_decision is not None:
        state.report_decision(ctx, {"decision": decision, "cached": cached,
                                    "categories": categories})


def _decide(ctx: RequestContext, state: ModerationState, hits: dict[str, list[str]], *,
            cached: bool) -> None:
    if not hits:
        _report_decision(ctx, state, "allowed", cached=cached)
        return
    categories = list(hits)
    paths = list(dict.fromkeys(path for found in hits.values() for path in found))
    ctx.log["moderation_categories"] = categories
    _report_decision(ctx, state, "blocked", cached=cached, categories=",".join(categories))
    logger.warning("moderation: categories %s flagged in %s (request %s)",
                   ",".join(categories), ",".join(paths), ctx.request_id)
    raise SidecarError(400, _blocked_message(categories, paths), code="moderation_flagged")


def _failed(ctx: RequestContext, state: ModerationState, failure: ModerationUnavailable) -> None:
    _report_decision(ctx, state, f"failed_{state.failure_mode}", cached=False)
    logger.warning("moderation: classifier unavailable (%s), failing %s (request %s)",
                   failure, state.failure_mode, ctx.request_id)
    if state.failure_mode == "closed":
        raise SidecarError(
            503, "Content moderation could not check this request in time; it was not sent "
            "upstream. Try again later.", type="service_unavailable",
            code="moderation_unavailable")


def _blocked_message(categories: list[str], paths: list[str]) -> str:
    named = ", ".join(f"'{category}'" for category in categories)
    plural = "ies" if len(categories) > 1 else "y"
    where = paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} other field(s)"
    return (f"The request was refused by content moderation: categor{plural} {named} "
            f"flagged in {where}.")


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """Calls to the classifier and their summed latency, by status; cached texts."""
    state = app.get(MODERATION)
    if state is None:
        return None
    reported: list[tuple[str, dict[str, str], float]] = [
        ("moderation_cache_entries", {}, float(len(state.cache)))]
    for status, count in state.calls.items():
        reported.append(("moderation_calls_total", {"status": status}, float(count)))
        reported.append(("moderation_call_seconds_total", {"status": status},
                         state.call_seconds[status]))
    return reported
