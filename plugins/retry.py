"""The retry plugin: retries failed upstream calls the way Envoy's router does.

What is retried: connection failures, resets and timeouts before upstream's headers
(:class:`proxy.errors.UpstreamError`), and the statuses in ``SIDECAR_RETRY_ON_STATUSES``
(default 429, 502, 503, 504; never a plain 500 unless configured). Waits use full jitter
(:func:`proxy.backoff.full_jitter_delay`) unless upstream sent ``Retry-After`` or
``retry-after-ms``, which is obeyed; a wait longer than ``SIDECAR_RETRY_RETRY_AFTER_CAP_SECONDS``
is not worth it and the upstream answer goes to the caller as it is.

What is not retried:

- anything once a body byte went to the caller — the wrapper returns as soon as headers are
  in, so a stream that breaks later is never replayed;
- streamed request bodies (file uploads): they were consumed by the first attempt;
- calls that create state upstream (:func:`creates_state`), unless the failure proves the
  request was not acted on (connection refused, 429, 503) or
  ``SIDECAR_RETRY_NON_IDEMPOTENT=true``;
- more than ``SIDECAR_RETRY_MAX_ATTEMPTS`` attempts in total, retries that would start after
  ``SIDECAR_RETRY_DEADLINE_SECONDS``, and retries beyond the retry budget: at most
  ``SIDECAR_RETRY_BUDGET_PERCENT`` of the requests currently waiting for upstream may be
  retries (but always ``SIDECAR_RETRY_BUDGET_MIN_CONCURRENT``), which keeps an upstream
  outage from turning into a retry storm.

Every answer carries ``X-Sidecar-Attempts``: how many requests were sent upstream for it.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.backoff import full_jitter_delay, parse_retry_after
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.errors import UpstreamError
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emit
from proxy.settings import Setting, Settings

__all__ = [
    "ATTEMPTS_HEADER",
    "RETRIER",
    "STATELESS_POST_OPERATIONS",
    "Retrier",
    "RetryBudget",
    "RetryPolicy",
    "creates_state",
]

ATTEMPTS_HEADER = "X-Sidecar-Attempts"

#: Failures that prove upstream did not act on the request: the connection was never made,
#: or upstream refused it before doing any work (rate limit, overload).
_NOT_ACTED_ON = frozenset({"connect", "http_429", "http_503"})

#: Methods HTTP defines as idempotent (RFC 9110 section 9.2.2): repeating them is harmless.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

#: POST operations that only compute an answer and leave nothing behind upstream, so a repeat
#: costs tokens at worst. Every other POST and PATCH is taken to create or change state
#: (conversations.start/append/restart and their _stream variants, agents.create and update,
#: files.upload, batch.jobs.create, libraries, fine-tuning, workflows, admin ...), as is any
#: request to a path outside the API spec.
STATELESS_POST_OPERATIONS = frozenset({
    "chat.complete",
    "fim.complete",
    "agents.complete",
    "embeddings.create",
    "classifiers.classify",
    "classifiers.classify_chat",
    "classifiers.moderate",
    "classifiers.moderate_chat",
    "ocr.process",
    "audio.speech.complete",
    "audio.transcriptions.complete",
    "audio.transcriptions.complete_stream",
    "observability.chat_completion_events.search",
    "observability.chat_completion_events.search_ids",
    "observability.chat_completion_fields.get_options_counts",
    "observability.logs.search",
    "observability.spans.aggregate",
    "observability.spans.search",
    "observability.spans.search_evaluations",
    "observability.spans.search_latest_evaluations",
    "observability.traces.aggregate",
    "observability.traces.search",
    "workflows.executions.query",
})


def creates_state(method: str, operation_name: str) -> bool:
    """Whether repeating this call could create or change something upstream twice."""
    if method.upper() in _IDEMPOTENT_METHODS:
        return False
    return operation_name not in STATELESS_POST_OPERATIONS


class Answer(Protocol):
    """What the retrier needs of an upstream answer (:class:`UpstreamResponse` has it)."""

    @property
    def status(self) -> int:
        """HTTP status."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers (case-insensitive)."""

    async def release(self) -> None:
        """Discard the answer."""


A = TypeVar("A", bound=Answer)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before trying again. Seconds throughout."""

    max_attempts: int = 3
    base_interval: float = 0.025
    max_interval: float = 0.25
    retry_after_cap: float = 10.0
    deadline: float = 30.0
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    non_idempotent: bool = False
    budget_percent: float = 20.0
    budget_min_concurrent: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the ``retry.*`` settings describe."""
        base = float(settings["retry.base_interval_seconds"])
        max_interval = float(settings["retry.max_interval_seconds"]) or 10 * base
        return cls(
            max_attempts=int(settings["retry.max_attempts"]),
            base_interval=base,
            max_interval=max_interval,
            retry_after_cap=float(settings["retry.retry_after_cap_seconds"]),
            deadline=float(settings["retry.deadline_seconds"]),
            retry_statuses=frozenset(int(s) for s in settings["retry.on_statuses"]),
            non_idempotent=bool(settings["retry.non_idempotent"]),
            budget_percent=float(settings["retry.budget_percent"]),
            budget_min_concurrent=int(settings["retry.budget_min_concurrent"]),
        )


class RetryBudget:
    """Envoy's retry budget: retries in flight may be at most ``percent`` of active requests,
    but ``minimum`` concurrent retries are always allowed.

    A request is active while it waits for upstream's headers; a retry is in flight from the
    moment it is decided (its backoff included) until its attempt has an answer.
    """

    def __init__(self, percent: float, minimum: int) -> None:
        self.percent = percent
        self.minimum = minimum
        self.active = 0
        self.retries = 0

    def allowed(self) -> int:
        """How many retries may be in flight right now."""
        return max(self.minimum, int(self.active * self.percent / 100))

    def try_acquire(self) -> bool:
        """Take a slot for one retry; ``False`` when the budget is spent."""
        if self.retries >= self.allowed():
            return False
        self.retries += 1
        return True

    def release(self) -> None:
        """Give back a retry slot."""
        self.retries -= 1


@dataclass(frozen=True, slots=True)
class _Stop:
    reason: str


def _failure_reason(status: int, retry_statuses: frozenset[int]) -> str | None:
    return f"http_{status}" if status in retry_statuses else None


class Retrier:
    """Runs one logical upstream call, repeating it as :class:`RetryPolicy` allows.

    ``clock`` (monotonic seconds), ``wall_clock`` (Unix time, for HTTP-date ``Retry-After``),
    ``sleep`` and ``random`` are injectable so the behaviour can be checked without waiting.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.random = random
        self.budget = RetryBudget(policy.budget_percent, policy.budget_min_concurrent)

    async def run(
        self,
        call: Callable[[], Awaitable[A]],
        *,
        stateful: bool = False,
        replayable: bool = True,
        on_retry: Callable[[int, str, float], None] | None = None,
        on_stop: Callable[[str], None] | None = None,
    ) -> A:
        """Call ``call()`` until it succeeds or the policy says stop; return the last answer
        or raise the last :class:`UpstreamError`.

        ``stateful`` marks a call that may create state upstream; ``replayable`` is false when
        the request body cannot be sent twice. ``on_retry(attempt, reason, delay)`` is told
        about each retry before its wait; ``on_stop(why)`` why a retriable failure was not
        retried. A discarded answer is released before the wait.
        """
        started = self.clock()
        budget = self.budget
        budget.active += 1
        holding = False
        attempt = 1
        try:
            while True:
                answer: A | None = None
                error: UpstreamError | None = None
                try:
                    answer = await call()
                except UpstreamError as exc:
                    error = exc
                finally:
                    if holding:
                        budget.release()
                        holding = False
                if error is not None:
                    reason = error.reason
                else:
                    assert answer is not None
                    status_reason = _failure_reason(answer.status, self.policy.retry_statuses)
                    if status_reason is None:
                        return answer
                    reason = status_reason
                decision = self._decide(reason, answer, attempt, started, stateful, replayable)
                if isinstance(decision, _Stop):
                    if on_stop is not None:
                        on_stop(decision.reason)
                    if error is not None:
                        raise error
                    assert answer is not None
                    return answer
                holding = True
                if answer is not None:
                    await answer.release()
                attempt += 1
                if on_retry is not None:
                    on_retry(attempt, reason, decision)
                await self.sleep(decision)
        finally:
            budget.active -= 1
            if holding:
                budget.release()

    def _decide(
        self,
        reason: str,
        answer: Answer | None,
        attempt: int,
        started: float,
        stateful: bool,
        replayable: bool,
    ) -> float | _Stop:
        """The wait before the next attempt, or why there is none. Takes a budget slot."""
        policy = self.policy
        if not replayable:
            return _Stop("unreplayable_body")
        if attempt >= policy.max_attempts:
            return _Stop("max_attempts")
        if stateful and not policy.non_idempotent and reason not in _NOT_ACTED_ON:
            return _Stop("not_idempotent")
        asked = None if answer is None else parse_retry_after(answer.headers, self.wall_clock())
        if asked is not None:
            if asked > policy.retry_after_cap:
                return _Stop("retry_after_too_long")
            delay = asked
        else:
            delay = full_jitter_delay(attempt, policy.base_interval, policy.max_interval,
                                      self.random)
        if self.clock() + delay - started > policy.deadline:
            return _Stop("deadline")
        if not self.budget.try_acquire():
            return _Stop("budget")
        return delay


RETRIER = web.AppKey("retry_retrier", Retrier)


def _check_statuses(values: list[str]) -> str | None:
    for value in values:
        if not value.isdigit() or not 400 <= int(value) <= 599:
            return f"must list HTTP error statuses (400-599), got {value!r}"
    return None


#: The events this plugin emits.
EVENTS = (
    EventSpec("retry.attempt", "An upstream call is about to be retried.",
              fields=("attempt", "reason", "delay_s"),
              metrics=(EventMetric("retries", "Retries, by reason.", ("reason",)),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Retry settings; defaults follow Envoy's retry policy."""
    return [
        Setting("retry.max_attempts", "int", 3,
                "Attempts per request in total, the first included (1 turns retries off).",
                minimum=1),
        Setting("retry.base_interval_seconds", "float", 0.025,
                "Backoff base: retry N waits a random time below (2^N - 1) x base.", minimum=0),
        Setting("retry.max_interval_seconds", "float", 0.0,
                "Upper bound of a backoff wait; 0 means 10 x the base interval.", minimum=0),
        Setting("retry.retry_after_cap_seconds", "float", 10.0,
                "Longest Retry-After / retry-after-ms the sidecar waits out itself; a longer "
                "one goes back to the caller.",
                deprecated_env=("SIDECAR_RETRY_AFTER_CAP_SECONDS",), minimum=0),
        Setting("retry.deadline_seconds", "float", 30.0,
                "No retry starts (backoff included) later than this after the first attempt.",
                minimum=0),
        Setting("retry.on_statuses", "list", ["429", "502", "503", "504"],
                "Upstream statuses that are retried.", check=_check_statuses),
        Setting("retry.non_idempotent", "bool", False,
                "Also retry calls that create state upstream after failures where upstream "
                "may have acted (reset, timeout, 502, 504)."),
        Setting("retry.budget_percent", "float", 20.0,
                "Retries in flight may be at most this percentage of active requests.", minimum=0),
        Setting("retry.budget_min_concurrent", "int", 3,
                "Concurrent retries always allowed, whatever the budget percentage.", minimum=0),
    ]


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """The backoff cap must not be below the base interval."""
    cap = float(settings["retry.max_interval_seconds"])
    base = float(settings["retry.base_interval_seconds"])
    if cap and cap < base:
        return [f"SIDECAR_RETRY_MAX_INTERVAL_SECONDS: must be at least the base interval "
                f"({base:g}), got {cap:g}"]
    return []


@hookimpl
def startup(app: web.Application) -> None:
    """Build the retrier (and its budget, shared by every request of this sidecar)."""
    app[RETRIER] = Retrier(RetryPolicy.from_settings(app[SETTINGS]))


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall:
    """Retry around everything inside (breaker, key pool, the upstream call)."""
    retrier = ctx.app[RETRIER]

    async def with_retries(ctx: RequestContext) -> UpstreamResponse:
        def on_retry(attempt: int, reason: str, delay: float) -> None:
            emit(ctx.app, "retry.attempt", ctx, attempt=attempt, reason=reason,
                 delay_s=round(delay, 4))

        def on_stop(why: str) -> None:
            ctx.log["retry_stopped"] = why

        replayable = ctx.body is not None or not ctx.request.body_exists
        try:
            return await retrier.run(
                lambda: call(ctx),
                stateful=creates_state(ctx.method, ctx.operation_name),
                replayable=replayable,
                on_retry=on_retry,
                on_stop=on_stop,
            )
        finally:
            ctx.response_headers[ATTEMPTS_HEADER] = str(ctx.attempts)

    return with_retries


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """Retry budget usage: requests waiting for upstream and retries among them."""
    retrier = app.get(RETRIER)
    if retrier is None:
        return None
    budget = retrier.budget
    return [
        ("retry_active_requests", {}, float(budget.active)),
        ("retry_retries_in_flight", {}, float(budget.retries)),
    ]
