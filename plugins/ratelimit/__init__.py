"""The rate-limit plugin: request and token limits per caller, shared through Redis.

Each request is checked against its caller's request limit (``RATE_LIMIT_REQUESTS`` per
``RATE_LIMIT_WINDOW`` seconds) and token budget (``SIDECAR_RATELIMIT_TOKENS_PER_MINUTE``) in
one atomic decision, in which a JSON request also takes its prompt's estimated tokens (so
that requests in flight together cannot all pass an untouched budget); the difference with
the usage upstream reports is settled when the request ends, streamed responses included.
Over a limit the caller gets a 429 in Mistral's error shape with ``Retry-After``; every
response carries ``RateLimit-Policy`` / ``RateLimit`` and the legacy ``X-RateLimit-*``
headers, unless upstream sent its own of the same name. With ``REDIS_HOST`` empty the same
limits are kept in process; when Redis fails at run time the plugin falls back (``open``) or
refuses (``closed``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from plugins.ratelimit.caller import caller_id
from plugins.ratelimit.gcra import Decision, Limit, whole_seconds
from plugins.ratelimit.headers import HEADER_NAMES, rate_limit_headers, reset_seconds
from plugins.ratelimit.plan import REQUESTS, Plan, PlanCache
from plugins.ratelimit.policy import Policy, PolicyTable, check_overrides
from plugins.ratelimit.redis_limiter import RedisLimiter
from plugins.ratelimit.service import LimiterUnavailable, RateLimiter
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext, UpstreamResponse
from proxy.errors import SidecarError
from proxy.estimate import estimate_tokens
from proxy.event_registry import EventMetric, EventSpec, Label, LevelWhen
from proxy.events import emit, emitter
from proxy.settings import Setting, Settings

__all__ = ["LIMITER", "POLICIES", "RateLimiter", "caller_id"]

LIMITER = web.AppKey("ratelimit_limiter", RateLimiter)
"""The app's :class:`RateLimiter` (the Redis backend, fallback state, in-process buckets)."""
POLICIES = web.AppKey("ratelimit_policies", PolicyTable)
"""Default limits and their per-role and per-key overrides."""
ENFORCE = web.AppKey("ratelimit_enforce", bool)
"""False in log-only (dark launch) mode."""

PLANS = web.AppKey("ratelimit_plans", PlanCache)
"""Each recent caller's limits, ready to evaluate."""
REPORT_DECISION: web.AppKey[Callable[[RequestContext | None, dict[str, Any]], None] | None] = \
    web.AppKey("ratelimit_report_decision")
"""Reports a ``ratelimit.decision`` event; ``None`` when nothing observes them."""

_STATE = "ratelimit"
#: ``ctx.state`` key: the prompt tokens the token limit took when the request was admitted.
_HELD_TOKENS = "ratelimit.held_tokens"


#: The events this plugin emits.
EVENTS = (
    # One per limit and request: a pass is only worth a line at DEBUG.
    EventSpec("ratelimit.decision", "The limiter's decision on one limit of a request.",
              fields=("limit", "allowed", "remaining", "scope", "enforced"),
              levels=(LevelWhen("allowed", "DEBUG"),),
              metrics=(EventMetric(
                  "ratelimit_decisions", "Rate-limit decisions, by limit (requests, tokens), "
                  "decision (allowed, rejected) and scope.",
                  ("limit", Label("decision", field="allowed",
                                  values={True: "allowed", False: "rejected"}), "scope")),)),
    # Whether the fallback is active now is this plugin's own gauge.
    EventSpec("ratelimit.fallback", "The limiter fell back to in-process limiting (active) "
              "or went back to Redis.", fields=("active", "reason", "failure_mode"),
              levels=(LevelWhen("active", "WARNING"),),
              metrics=(EventMetric("ratelimit_fallbacks",
                                   "Times the limiter fell back to in-process limiting.",
                                   when="active"),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Limits, overrides, enforcement, and the Redis connection they are shared through."""
    return [
        Setting("ratelimit.requests", "int", 60,
                "Requests each caller may make per window (0 = no request limit).",
                env="RATE_LIMIT_REQUESTS", minimum=0),
        Setting("ratelimit.window_seconds", "int", 60,
                "Length of the request-limit window in seconds.",
                env="RATE_LIMIT_WINDOW", minimum=1),
        Setting("ratelimit.tokens_per_minute", "int", 0,
                "Tokens (prompt + completion, as upstream reports them) each caller may use "
                "per minute (0 = no token limit).",
                deprecated_env=("SIDECAR_TOKENS_PER_MINUTE",), minimum=0),
        Setting("ratelimit.overrides", "data", {},
                "Limits per role and per key: {roles: {NAME: {requests, window, "
                "tokens_per_minute}}, keys: {KEY_ID: {...}}}.", check=check_overrides),
        Setting("ratelimit.enforce", "bool", True,
                "Refuse requests over a limit; false only logs what would be refused "
                "(dark launch)."),
        Setting("ratelimit.failure_mode", "str", "open",
                "When Redis fails: 'open' falls back to per-process limits, 'closed' "
                "answers 503.",
                choices=("open", "closed")),
        Setting("ratelimit.probe_interval_seconds", "float", 1.0,
                "While Redis is failing, how often one request tries it again.", minimum=0.01),
    ]


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """Limits must stay within what the limiter counts exactly."""
    return [f"RATE_LIMIT_REQUESTS / ratelimit.overrides: {problem}"
            for problem in _policies(settings).problems()]


def _policies(settings: Settings) -> PolicyTable:
    default = Policy(int(settings["ratelimit.requests"]),
                     int(settings["ratelimit.window_seconds"]),
                     int(settings["ratelimit.tokens_per_minute"]))
    return PolicyTable(default, settings["ratelimit.overrides"])


@hookimpl
def startup(app: web.Application) -> Awaitable[None]:
    """Create the limiter, on Redis when configured, and check Redis once without blocking
    start-up on it: an unreachable Redis starts the sidecar in its failure mode."""

    async def start() -> None:
        settings = app[SETTINGS]
        app[POLICIES] = _policies(settings)
        app[ENFORCE] = bool(settings["ratelimit.enforce"])
        app[PLANS] = PlanCache()
        app[REPORT_DECISION] = emitter(app, "ratelimit.decision")
        timeout = int(settings["redis.timeout_ms"]) / 1000
        shared = None
        if settings["redis.host"]:
            shared = RedisLimiter(
                str(settings["redis.host"]), int(settings["redis.port"]),
                str(settings["redis.prefix"]), timeout=timeout,
                password=str(settings["redis.password"]), db=int(settings["redis.db"]),
                connect_timeout=max(timeout, 1.0))
        limiter = RateLimiter(
            shared,
            timeout=timeout,
            failure_mode=str(settings["ratelimit.failure_mode"]),
            probe_interval=float(settings["ratelimit.probe_interval_seconds"]),
            emit=lambda name, **fields: emit(app, name, **fields),
        )
        app[LIMITER] = limiter
        await limiter.verify()

    return start()


@hookimpl
def shutdown(app: web.Application) -> Awaitable[None] | None:
    """Close the Redis connections."""
    limiter = app.get(LIMITER)
    if limiter is None:
        return None
    return limiter.close()


@hookimpl
def readiness(app: web.Application) -> Awaitable[dict[str, Any]] | None:
    """``ratelimit``: backend in use; not ok only when Redis is down in closed mode."""
    limiter = app.get(LIMITER)
    if limiter is None:
        return None

    async def check() -> dict[str, Any]:
        redis = await limiter.check_shared()
        ok = redis["ok"] or limiter.failure_mode == "open"
        detail: dict[str, Any] = {"ok": ok, "backend": limiter.backend,
                                  "failure_mode": limiter.failure_mode}
        if limiter.shared is not None:
            detail["redis"] = redis
            detail["fallback"] = limiter.switch.active
        return {"ratelimit": detail}

    return check()


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """``ratelimit_fallback_active``: 1 while Redis is unusable."""
    limiter = app.get(LIMITER)
    if limiter is None or limiter.shared is None:
        return None
    return [("ratelimit_fallback_active", {}, 1.0 if limiter.switch.active else 0.0)]


@hookimpl
def on_request(ctx: RequestContext) -> Awaitable[None] | None:
    """Check the caller's limits; refuse with 429 over them, add headers either way."""
    app = ctx.app
    policy = app[POLICIES].for_identity(ctx.identity)
    if policy.requests <= 0 and policy.tokens_per_minute <= 0:
        return None
    return _admit(ctx, app[PLANS].get(caller_id(ctx), policy))


async def _admit(ctx: RequestContext, plan: Plan) -> None:
    limits, held = _holding(ctx, plan)
    try:
        decision = await ctx.app[LIMITER].evaluate(limits)
    except LimiterUnavailable:
        _unavailable(ctx)
        return
    if decision.allowed and held:
        ctx.state[_HELD_TOKENS] = held
    _apply(ctx, plan, decision)


def _holding(ctx: RequestContext, plan: Plan) -> tuple[tuple[Limit, ...], int]:
    """``plan``'s limits with the token limit taking the request's estimated prompt tokens
    (:func:`proxy.estimate.estimate_tokens`), and that estimate: requests admitted together
    cannot all pass a limit none of them has been debited from yet. 0 for a request without
    a JSON body, which is debited once its usage is known, as before."""
    token_limit = plan.token_limit
    if token_limit is None or not ctx.body:
        return plan.limits, 0
    held, _ = estimate_tokens(len(ctx.body), 0, 0)
    holding = Limit(token_limit.key, token_limit.quota, token_limit.window,
                    check=token_limit.check, consume=held)
    return tuple(holding if limit is token_limit else limit for limit in plan.limits), held


def _unavailable(ctx: RequestContext) -> None:
    ctx.log["ratelimit"] = "unavailable"
    if not ctx.app[ENFORCE]:
        return
    retry = max(1, math.ceil(ctx.app[LIMITER].switch.probe_interval))
    raise SidecarError(503, "Rate limiting is temporarily unavailable; retry shortly.",
                       type="service_unavailable", code="rate_limiter_unavailable",
                       headers={"Retry-After": str(retry)})


def _apply(ctx: RequestContext, plan: Plan, decision: Decision) -> None:
    """Record the decision: events, headers, and a 429 when it refused (and is enforced)."""
    app = ctx.app
    enforce = app[ENFORCE]
    refused: list[tuple[str, int]] = []
    report = app[REPORT_DECISION]
    for name, limit, state in zip(plan.names, plan.limits, decision.states, strict=True):
        passed = decision.allowed or state.remaining >= limit.check
        if report is not None:
            remaining = state.remaining
            report(ctx, {"limit": "requests" if name == REQUESTS else "tokens",
                         "allowed": passed, "remaining": remaining if remaining > 0 else 0,
                         "scope": plan.policy.scope, "enforced": enforce})
        if not passed:
            refused.append((name, reset_seconds(limit, state)))
    if not decision.allowed and not enforce:
        ctx.log["ratelimit"] = "would_limit"
        ctx.state[_STATE] = plan
        return
    if enforce:
        ctx.response_headers.update(rate_limit_headers(plan.names, plan.limits,
                                                       decision.states, plan.policy_header))
    if decision.allowed:
        ctx.state[_STATE] = plan
        return
    _refuse(ctx, plan.policy, decision, refused)


def _refuse(ctx: RequestContext, policy: Policy, decision: Decision,
            refused: list[tuple[str, int]]) -> None:
    retry = max([1, whole_seconds(decision.retry_after), *(t for _, t in refused)])
    ctx.log["ratelimit"] = "limited"
    if any(name == REQUESTS for name, _ in refused):
        message = (f"Rate limit exceeded: {policy.requests} requests per {policy.window} "
                   f"seconds. Retry after {retry} seconds.")
        code = "rate_limited"
    else:
        message = (f"Token rate limit exceeded: {policy.tokens_per_minute} tokens per minute. "
                   f"Retry after {retry} seconds.")
        code = "token_rate_limited"
    raise SidecarError(429, message, type="rate_limit_error", code=code,
                       headers={"Retry-After": str(retry)})


@hookimpl
def on_response(ctx: RequestContext, response: UpstreamResponse) -> None:
    """Upstream's own rate-limit headers win: drop ours wherever upstream sent the same name."""
    if _STATE not in ctx.state:
        return
    upstream = response.headers
    for name in HEADER_NAMES:
        if name in upstream:
            ctx.response_headers.pop(name, None)


@hookimpl
def on_end(ctx: RequestContext) -> Awaitable[None] | None:
    """Debit the tokens the response used (streamed ones too) from the caller's budget,
    less the estimate admission took (given back when the response used fewer)."""
    plan: Plan | None = ctx.state.get(_STATE)
    if plan is None or plan.token_limit is None:
        return None
    usage = ctx.usage
    used = usage.total_tokens if usage is not None and usage.total_tokens > 0 else 0
    # What admission took is settled: the rest debited, or what it took too much given back.
    amount = used - ctx.state.get(_HELD_TOKENS, 0)
    if amount == 0:
        return None
    limit = plan.token_limit
    debit = Limit(limit.key, limit.quota, limit.window, check=0, consume=amount)
    return _debit(ctx, debit)


async def _debit(ctx: RequestContext, debit: Limit) -> None:
    try:
        await ctx.app[LIMITER].evaluate([debit])
    except LimiterUnavailable:
        ctx.log["ratelimit_debit"] = "lost"
