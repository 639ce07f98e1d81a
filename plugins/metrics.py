"""The metrics plugin: Prometheus metrics on ``/metrics``.

Everything is named ``mistral_sidecar_<what>_<unit>`` and labelled only with bounded values:
operation names (``"unknown"`` for paths outside the API spec), methods, statuses, models,
event names. Never ids or raw paths. Values that come from upstream answers, callers or
plugins (models, owners, statuses, event fields, dependency names) pass through
:func:`safe_label` (charset ``[A-Za-z0-9_.:/@+-]``, at most 100 characters) and each such
label keeps its first distinct values only (:class:`BoundedValues`), the rest counted as
``"other"``: whatever upstream sends, the exposition parses and its series stay bounded.

Every family lives in a :class:`CollectorRegistry` kept on the application (two sidecars in
one process never share counters), built at start-up with the label children of the hot path
cached, so a request costs a few dictionary look-ups and lock-protected additions.

Sources:

- each request, once, from ``on_end``: requests, durations, upstream
  time, attempts, tokens, time to first token and tokens/s of streams, conversations;
- events, through ``event_observer``: every event in ``mistral_sidecar_events_total{event}``
  and the listed ones in their own families (rate-limit decisions, retries, breaker
  transitions ...);
- the ``gauges`` hook of the other plugins, read at scrape time: each entry becomes
  ``mistral_sidecar_<name>``;
- the ``readiness`` hook, read at scrape time: ``mistral_sidecar_dependency_up{dependency}``.

Several worker processes: start every worker with ``PROMETHEUS_MULTIPROC_DIR`` pointing at
one empty directory shared by them (wiped before start). prometheus-client then keeps the
values in memory-mapped files there and ``/metrics`` of any worker reports the sum over all
of them (gauges: see ``multiprocess_mode`` below). Gauges from other plugins' ``gauges`` hook
and dependency health describe the worker that answered the scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from proxy import STOP_OBSERVING, StopObserving, __version__, hookimpl
from proxy.app import FORWARDER, PLUGINS, SETTINGS
from proxy.chain import await_me_maybe
from proxy.context import RequestContext
from proxy.errors import SidecarError
from proxy.settings import Setting
from proxy.sse import SSEEvent

__all__ = [
    "LATENCY_BUCKETS",
    "METRICS",
    "OTHER",
    "PREFIX",
    "BoundedValues",
    "MetricsState",
    "first_token",
    "safe_label",
]

logger = logging.getLogger("mistral_sidecar.metrics")

PREFIX = "mistral_sidecar_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often each worker writes its number of requests in flight to the shared gauge.
IN_FLIGHT_SAMPLE_SECONDS = 1.0

#: Seconds; from a cached embedding (a few ms) to a long agent run with tools (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                   60.0, 120.0)
TOKENS_PER_SECOND_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0,
                             300.0, 500.0, 1000.0)
ENTRY_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0)
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONVERSATION_OPS = frozenset({
    "conversations.start", "conversations.start_stream",
    "conversations.append", "conversations.append_stream",
    "conversations.restart", "conversations.restart_stream",
})
_START_OPS = frozenset({"conversations.start", "conversations.start_stream"})
#: Conversation stream events that carry model output (the first one is the first token).
_TOKEN_EVENTS = frozenset({"message.output.delta", "function.call.delta"})
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Status label of a request whose caller left before any status was decided (nginx's 499).
CLIENT_CLOSED = "499"

_STATE_FIRST_TOKEN = "metrics.first_token"


def first_token(ctx: RequestContext) -> float | None:
    """``time.perf_counter()`` when the first output token of a stream was forwarded."""
    value: float | None = ctx.state.get(_STATE_FIRST_TOKEN)
    return value


#: Characters a label value keeps; anything else becomes "_". Every Prometheus parser reads
#: such values back unchanged (no quotes, backslashes, line breaks or surrogates to escape).
_UNSAFE_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.:/@+\-]")
#: Longest label value kept; a longer one becomes ``OTHER``.
MAX_LABEL_LENGTH = 100
#: The label value standing for everything past a label's bound (or too long to keep).
OTHER = "other"


def safe_label(value: Any) -> str:
    """``value`` as a label value safe to expose: characters outside
    ``[A-Za-z0-9_.:/@+-]`` replaced by ``_``, ``"none"`` for ``None`` or an empty value,
    ``"other"`` when longer than :data:`MAX_LABEL_LENGTH`.

    Every label value that comes from upstream answers, callers' requests or plugins passes
    through here (through :class:`BoundedValues` where it must also stay few)."""
    text = value if type(value) is str else ("" if value is None else str(value))
    if not text:
        return "none"
    if len(text) > MAX_LABEL_LENGTH:
        return OTHER
    return _UNSAFE_LABEL_CHARS.sub("_", text)


class BoundedValues:
    """One label's values, made safe (:func:`safe_label`) and bounded: past ``limit``
    distinct values, new ones become ``"other"``.

    Values come from upstream, callers or plugins (model names, owners, event fields); a
    misbehaving source must not be able to break the exposition or create unbounded series.
    """

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        """The label value to use for ``value``."""
        # ``seen`` holds only safe values, so a value found there as it is needs no cleaning.
        if type(value) is str and value in self.seen:
            return value
        text = safe_label(value)
        if text in self.seen or text == OTHER:
            return text
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(text)
        return text


@dataclass
class Health:
    """The latest readiness report, refreshed before each scrape."""

    checks: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class PluginGaugeCollector:
    """Exports every entry of the ``gauges`` hook as gauge ``mistral_sidecar_<name>``.

    Names ending in ``_total`` (running totals) become counters. Names that are not valid,
    or that this plugin's own families use, are dropped with one warning each.
    """

    def __init__(self, app: web.Application, reserved: set[str]) -> None:
        self.app = app
        self.reserved = reserved
        self.warned: set[str] = set()

    def describe(self) -> list[Metric]:
        """Nothing up front: the names are only known at scrape time."""
        return []

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message, *args)

    def collect(self) -> Iterable[Metric]:
        """Call every plugin's ``gauges`` hook and group the values by name."""
        families: dict[str, Metric] = {}
        for plugin, result in self.app[PLUGINS].call_all("gauges", app=self.app):
            for entry in result or ():
                try:
                    name, labels, value = entry
                    full = PREFIX + str(name)
                    if (not _NAME_RE.match(full) or full in self.reserved
                            or full.removesuffix("_total") in self.reserved):
                        self._warn_once(f"name:{plugin}:{name}", "plugin %s reports gauge %r, "
                                        "which is not a valid or free metric name", plugin, name)
                        continue
                    clean = {str(k): safe_label(v) for k, v in (labels or {}).items()}
                    if not all(_LABEL_RE.match(k) and not k.startswith("__") for k in clean):
                        self._warn_once(f"labels:{plugin}:{name}", "plugin %s reports gauge %r "
                                        "with invalid label names", plugin, name)
                        continue
                    # A running total reported as a value is exposed as the counter it is.
                    base, kind = ((full[:-6], "counter") if full.endswith("_total")
                                  else (full, "gauge"))
                    family = families.get(base)
                    if family is None:
                        family = families[base] = Metric(
                            base, f"Reported by the {plugin} plugin.", kind)
                    family.add_sample(full, clean, float(value))
                except (TypeError, ValueError):
                    self._warn_once(f"entry:{plugin}", "plugin %s reports a malformed gauge "
                                    "entry %r", plugin, entry)
        return list(families.values())


class HealthCollector:
    """``mistral_sidecar_dependency_up`` and latency from the last readiness report."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def describe(self) -> list[Metric]:
        """Names are fixed, but values appear only after the first refresh."""
        return []

    def collect(self) -> Iterable[Metric]:
        """One sample per dependency the readiness hooks reported."""
        up = Metric(PREFIX + "dependency_up",
                    "1 when the dependency answered its last readiness check, else 0.", "gauge")
        latency = Metric(PREFIX + "dependency_latency_seconds",
                         "Duration of the dependency's last readiness check.", "gauge")
        ready = True
        checks = self.health.checks
        seen: set[str] = set()

        def add(name: str, check: dict[str, Any]) -> bool:
            ok = bool(check.get("ok", True))
            labels = {"dependency": safe_label(name)}
            up.add_sample(up.name, labels, 1.0 if ok else 0.0)
            ms = check.get("latency_ms")
            if isinstance(ms, int | float) and not isinstance(ms, bool):
                latency.add_sample(latency.name, labels, float(ms) / 1000)
            seen.add(name)
            return ok

        for name, check in checks.items():
            if isinstance(check, dict):
                ready = add(name, check) and ready
                # A check may report the services behind it (the rate limiter's Redis, which
                # is down while the limiter itself stays ok in fail-open mode).
                for inner, detail in check.items():
                    if isinstance(detail, dict) and "ok" in detail:
                        label = inner if inner not in checks and inner not in seen \
                            else f"{name}.{inner}"
                        add(label, detail)
        for name in self.health.errors:
            up.add_sample(up.name, {"dependency": safe_label(name)}, 0.0)
            ready = False
        overall = Metric(PREFIX + "ready", "1 when /readyz would answer 200, else 0.", "gauge")
        overall.add_sample(overall.name, {}, 1.0 if ready else 0.0)
        return [up, latency, overall]


def observe_all(child: Any, values: list[float]) -> None:
    """``child.observe(v)`` for every value, with one update per bucket.

    prometheus-client has no batch observe; its histogram child keeps per-bucket counts
    (``_buckets``, not cumulative), ``_sum`` and ``_upper_bounds``, which this fills the way
    ``observe`` does: each value in the first bucket whose bound is not below it. A child
    without them (another version) gets plain ``observe`` calls.
    """
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) == 1:
        for value in values:
            child.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        if value != value:  # NaN lands in no bucket: leave it to observe()
            child.observe(value)
            continue
        index = bisect_left(bounds, value)
        counts[index] = counts.get(index, 0) + 1
    total.inc(sum(v for v in values if v == v))
    for index, count in counts.items():
        buckets[index].inc(count)


class _Series(NamedTuple):
    """What one kind of request (operation, method, status, streamed) adds to: its cached
    children and histogram value lists."""

    requests: Any
    durations: list[float]
    upstream_durations: list[float]
    attempts: Any
    conversation: bool


class MetricsState:
    """Every metric family of one application and the cached label children."""

    def __init__(self, *, owner_label: bool, readiness: bool,
                 readiness_timeout: float, multiproc_dir: str | None,
                 flush_interval: float = 0.0,
                 in_flight: Callable[[], int] = lambda: 0) -> None:
        self.owner_label = owner_label
        # A finished request is read at once, while it is still in the processor's caches,
        # and nothing of it is kept: what it adds to each counter and histogram series
        # accumulates here, and every series is updated once per flush (one lock and one
        # bucket search per series instead of per value). Keeping the requests themselves
        # until the flush would keep their whole object graphs alive for the garbage
        # collector to walk, which cost more than recording them.
        self.flush_interval = flush_interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._totals: defaultdict[Any, float] = defaultdict(float)
        # Kept per histogram child across flushes (emptied by each), so that cached series can
        # hold their lists and append without a lookup.
        self._observations: dict[Any, list[float]] = {}
        self.readiness = readiness
        self.readiness_timeout = readiness_timeout
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry()
        self.health = Health()
        r = self.registry
        op = ("operation",)

        self.requests = Counter(
            PREFIX + "requests", "Requests answered, by operation, method and status.",
            ("operation", "method", "status"), registry=r)
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from the request's arrival to the end of its response, by operation and "
            "whether it was streamed.", ("operation", "stream"), buckets=LATENCY_BUCKETS,
            registry=r)
        self.upstream_duration = Histogram(
            PREFIX + "upstream_duration_seconds",
            "Time from the first upstream attempt to the end of the response (retries and "
            "backoff included).", op, buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Streams: time from the request's arrival to its first output token.",
            ("operation", "model"), buckets=LATENCY_BUCKETS, registry=r)
        self.tokens_per_second = Histogram(
            PREFIX + "stream_output_tokens_per_second",
            "Streams: completion tokens per second after the first token.",
            ("operation", "model"), buckets=TOKENS_PER_SECOND_BUCKETS, registry=r)
        token_labels = ("model", "kind", "owner") if owner_label else ("model", "kind")
        self.tokens = Counter(
            PREFIX + "tokens", "Tokens reported in upstream usage, by model and kind "
            "(prompt, completion).", token_labels, registry=r)
        self.errors = Counter(
            PREFIX + "errors", "Errors the sidecar answered itself (or streams that broke), "
            "by operation and error code.", ("operation", "code"), registry=r)
        self.attempts = Counter(
            PREFIX + "upstream_attempts", "Requests sent upstream, retries included.",
            op, registry=r)
        self.inflight = Gauge(
            PREFIX + "requests_in_flight", "Requests received and not yet answered.",
            registry=r, multiprocess_mode="livesum")
        # The core counts the requests it is handling: one process reads that count at
        # scrape time; several write it to their shared file now and then
        # (:meth:`sample_in_flight`), since the scrape reads the other workers' files.
        self.in_flight = in_flight
        self.sampler: asyncio.TimerHandle | None = None
        if multiproc_dir is None:
            self.inflight.set_function(in_flight)
        self.conversations_started = Counter(
            PREFIX + "conversations_started", "Conversations started successfully, by whether "
            "an agent or a model answers them.", ("target",), registry=r)
        self.conversation_entries = Histogram(
            PREFIX + "conversation_entries", "Output entries per conversation response "
            "(entry_count).", op, buckets=ENTRY_BUCKETS, registry=r)
        self.conversation_duration = Histogram(
            PREFIX + "conversation_duration_seconds", "Duration of conversation requests "
            "(start, append, restart), streamed or not.", op, buckets=LATENCY_BUCKETS,
            registry=r)
        self.queue_wait = Histogram(
            PREFIX + "queue_wait_seconds", "Time requests waited for a concurrency slot, by "
            "outcome (admitted, rejected).", ("outcome",), buckets=QUEUE_WAIT_BUCKETS,
            registry=r)
        # Families fed by events.
        self.events = Counter(PREFIX + "events", "Plugin events, by name.", ("event",),
                              registry=r)
        self.ratelimit = Counter(
            PREFIX + "ratelimit_decisions", "Rate-limit decisions, by limit (requests, "
            "tokens), decision (allowed, rejected) and scope.", ("limit", "decision", "scope"),
            registry=r)
        self.fallbacks = Counter(
            PREFIX + "ratelimit_fallbacks", "Times the limiter fell back to in-process "
            "limiting.", registry=r)
        self.retries = Counter(PREFIX + "retries", "Retries, by reason.", ("reason",),
                               registry=r)
        self.breaker_transitions = Counter(
            PREFIX + "breaker_transitions", "Circuit-breaker state changes.",
            ("from_state", "to_state"), registry=r)
        self.breaker_rejections = Counter(
            PREFIX + "breaker_rejections", "Calls the circuit breaker refused, by state.",
            ("state",), registry=r)
        self.concurrency_rejections = Counter(
            PREFIX + "concurrency_rejections", "Requests refused for lack of a concurrency "
            "slot, by scope.", ("scope",), registry=r)
        self.keypool_cooldowns = Counter(
            PREFIX + "keypool_cooldowns", "Upstream keys put in cool-down, by key index and "
            "status.", ("key_index", "status"), registry=r)
        self.guard_detections = Counter(
            PREFIX + "guard_detections", "Input-guard detections, by rule and mode.",
            ("rule", "mode"), registry=r)
        self.auth_denials = Counter(
            PREFIX + "auth_denials", "Requests denied by authentication or authorisation.",
            ("status", "reason"), registry=r)
        self.spooled = Counter(
            PREFIX + "persistence_spooled_records", "Records written to the spool file while "
            "the database was unusable.", registry=r)
        self.replayed = Counter(
            PREFIX + "persistence_replayed_records", "Spooled records replayed into the "
            "database.", registry=r)
        self.build_info = Gauge(
            PREFIX + "build_info", "Always 1; the version label says what runs.", ("version",),
            registry=r, multiprocess_mode="max")
        self.build_info.labels(__version__).set(1)

        # Label guards for values that come from upstream or other plugins.
        self.models = BoundedValues(100)
        self.owners = BoundedValues(1000)
        # Upstream chooses the status; any three digits parse, so bound them like the rest.
        self.statuses = BoundedValues(50)
        # One guard per label of each event-fed family: (family, label position).
        self._guards: dict[tuple[Any, int], BoundedValues] = {}
        self._children: dict[Any, dict[tuple[Any, ...], Any]] = {}

        # Cached children of the per-request families.
        self._series: dict[tuple[str, str, int | None, bool], _Series] = {}
        self._tokens: dict[tuple[str, ...], tuple[Any, Any]] = {}
        # Token children by the model name exactly as upstream reported it (when it needs no
        # guarding and owners are not labelled): the common case, in one lookup.
        self._tokens_by_model: dict[str, tuple[Any, Any]] = {}
        self._decisions: dict[tuple[Any, bool, Any], tuple[Any, Any]] = {}
        self._stream: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "ratelimit.fallback": self._on_fallback,
            "concurrency.rejected": self._on_concurrency,
            "retry.attempt": self._on_retry,
            "breaker.transition": self._on_breaker_transition,
            "breaker.rejected": self._on_breaker_rejected,
            "keypool.cooldown": self._on_keypool,
            "guard.detection": self._on_guard,
            "auth.denied": self._on_auth,
            "persistence.spooled": self._on_spooled,
            "persistence.replayed": self._on_replayed,
        }
        self.own_names = _sample_names(self.registry)
        self.own_names.update(PREFIX + n for n in ("dependency_up", "dependency_latency_seconds",
                                                   "ready"))
        self.exposed = self.registry

    # --- per request --------------------------------------------------------------------

    def sample_in_flight(self) -> None:
        """Write the number of requests in flight to the shared gauge (several workers)."""
        self.inflight.set(self.in_flight())

    def sample_in_flight_every(self, seconds: float) -> None:
        """Sample the requests in flight now and every ``seconds`` from now on."""
        self.sample_in_flight()
        if self.loop is not None:
            self.sampler = self.loop.call_later(seconds, self.sample_in_flight_every, seconds)

    def request_finished(self, ctx: RequestContext) -> None:
        """A request ended: it is recorded with the next batch."""
        try:
            self._record(ctx, self._totals)
        except Exception:
            logger.exception("cannot record request %s in metrics", ctx.request_id)
        if self.timer is None:
            self._added()

    def _added(self) -> None:
        """Something was accumulated: flush now (no interval, or no loop), or soon."""
        if self.flush_interval <= 0 or self.loop is None:
            self.flush()
        elif self.timer is None:
            self.timer = self.loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Apply what was accumulated to the metric series (before each scrape, on a timer,
        at shutdown)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        totals, self._totals = self._totals, defaultdict(float)
        for child, amount in totals.items():
            child.inc(amount)
        for child, values in self._observations.items():
            if values:
                observe_all(child, values)
                values.clear()

    def _values(self, child: Any) -> list[float]:
        """The values observed on histogram child ``child`` since the last flush."""
        values = self._observations.get(child)
        if values is None:
            values = self._observations[child] = []
        return values

    def _observe(self, child: Any, value: float) -> None:
        """Observe ``value`` on a histogram child with the next flush."""
        self._values(child).append(value)

    def _series_for(self, key: tuple[str, str, int | None, bool]) -> _Series:
        operation, method, status, stream = key
        series = _Series(
            self.requests.labels(operation, method if method in _METHODS else OTHER,
                                 self.statuses(status) if status else CLIENT_CLOSED),
            self._values(self.request_duration.labels(operation, "true" if stream else "false")),
            self._values(self.upstream_duration.labels(operation)),
            self.attempts.labels(operation),
            operation in _CONVERSATION_OPS)
        if len(self._series) < 1000:
            self._series[key] = series
        return series

    def _tokens_for(self, ctx: RequestContext, model: str) -> tuple[Any, Any]:
        if self.owner_label:
            owner = ctx.identity.owner if ctx.identity is not None else "anonymous"
            key: tuple[str, ...] = (model, self.owners(owner))
        else:
            key = (model,)
        children = self._tokens.get(key)
        if children is None:
            children = self._tokens[key] = (
                self.tokens.labels(key[0], "prompt", *key[1:]),
                self.tokens.labels(key[0], "completion", *key[1:]))
        return children

    def _record(self, ctx: RequestContext, totals: defaultdict[Any, float]) -> None:
        op = ctx.operation
        operation = "unknown" if op is None else op.name
        status = ctx.response_status
        key = (operation, ctx.method, status, ctx.is_stream)
        series = self._series.get(key) or self._series_for(key)
        totals[series.requests] += 1
        timing = ctx.timing
        finished = timing.finished
        if finished is None:
            finished = timing.finished = time.perf_counter()
        duration = finished - timing.started
        series.durations.append(duration)
        if timing.upstream_started is not None:
            series.upstream_durations.append(finished - timing.upstream_started)
        if ctx.attempts:
            totals[series.attempts] += ctx.attempts

        # The concurrency plugin notes how long an admitted request waited for its slot.
        log = ctx.log
        if "queued_s" in log:
            queued = log["queued_s"]
            if isinstance(queued, int | float):
                self._observe(self.queue_wait.labels("admitted"), queued)

        if status is None or not 200 <= status < 300:
            return
        usage = ctx.usage
        first = ctx.state.get(_STATE_FIRST_TOKEN)
        if usage is None and first is None and not series.conversation:
            return
        body = ctx.response_json
        raw_model = body.get("model") if type(body) is dict else None
        children = self._tokens_by_model.get(raw_model) if type(raw_model) is str else None
        if children is not None and not self.owner_label:
            model: str | None = raw_model
        else:
            model = self._model(ctx, body)
            children = self._tokens_for(ctx, model or "unknown")
            if type(raw_model) is str and model == raw_model and not self.owner_label \
                    and len(self._tokens_by_model) < 1000:
                self._tokens_by_model[raw_model] = children
        if usage is not None:
            if usage.prompt_tokens:
                totals[children[0]] += usage.prompt_tokens
            if usage.completion_tokens:
                totals[children[1]] += usage.completion_tokens
        if first is not None:
            ttft_child, tps_child = self._stream_children(operation, model or "unknown")
            self._observe(ttft_child, first - timing.started)
            generating = finished - first
            if usage is not None and usage.completion_tokens > 1 and generating > 0:
                self._observe(tps_child, (usage.completion_tokens - 1) / generating)
        if series.conversation:
            self._count_conversation(ctx, operation, body, duration)

    def _model(self, ctx: RequestContext, body: Any) -> str | None:
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            model = ctx.resource_ids.get("model")
        if not model and isinstance(body, dict):
            for entry in body.get("outputs") or ():
                if isinstance(entry, dict) and isinstance(entry.get("model"), str):
                    model = entry["model"]
                    break
        return self.models(model) if model else None

    def _stream_children(self, operation: str, model: str) -> tuple[Any, Any]:
        key = (operation, model)
        children = self._stream.get(key)
        if children is None:
            children = self._stream[key] = (self.ttft.labels(operation, model),
                                            self.tokens_per_second.labels(operation, model))
        return children

    def _count_conversation(self, ctx: RequestContext, operation: str, body: Any,
                            duration: float) -> None:
        self._observe(self.conversation_duration.labels(operation), duration)
        if isinstance(body, dict) and isinstance(body.get("outputs"), list):
            self._observe(self.conversation_entries.labels(operation), len(body["outputs"]))
        if operation in _START_OPS:
            target = "agent" if ctx.resource_ids.get("agent_id") else "model"
            self.conversations_started.labels(target).inc()

    def request_failed(self, ctx: RequestContext, error: SidecarError) -> None:
        """Count an error answer or a broken stream, then the request itself."""
        self._inc(self.errors, (ctx.operation_name, error.code))
        self.request_finished(ctx)

    # --- events -------------------------------------------------------------------------

    def _child(self, family: Counter, values: tuple[Any, ...]) -> Any:
        """The child of ``family`` for ``values``, cached, labels kept bounded."""
        cache = self._children.get(family)
        if cache is None:
            cache = self._children[family] = {}
        try:
            child = cache.get(values)
        except TypeError:
            values = tuple(str(v) for v in values)
            child = cache.get(values)
        if child is None:
            child = family.labels(*(self._guard(family, i)(v) for i, v in enumerate(values)))
            if len(cache) < 1000:
                cache[values] = child
        return child

    def _guard(self, family: Counter, position: int) -> BoundedValues:
        """The guard of the label at ``position`` of ``family``."""
        guard = self._guards.get((family, position))
        if guard is None:
            guard = self._guards[family, position] = BoundedValues(50)
        return guard

    def _inc(self, family: Counter, values: tuple[Any, ...], amount: float = 1.0) -> None:
        """Add to the child of ``family`` for ``values`` (applied with the next flush)."""
        self._totals[self._child(family, values)] += amount

    def event(self, name: str, fields: dict[str, Any]) -> None:
        """Count one plugin event (applied with the next flush)."""
        if name == "ratelimit.decision":
            self.count_decision(None, fields)
            return
        try:
            self._event(name, fields)
        except Exception:
            logger.exception("cannot count event %s", name)
        if self.timer is None:
            self._added()

    def count_decision(self, ctx: RequestContext | None, fields: dict[str, Any]) -> None:
        """Count one rate-limit decision, reported for nearly every request: both its
        counters at once, their children found by the decision's fields in one look-up
        (applied with the next flush)."""
        try:
            children = self._decisions[fields["limit"], fields["allowed"], fields["scope"]]
        except (KeyError, TypeError):  # not seen yet, or fields unlike the limiter's own
            try:
                children = self._decision_children(fields)
            except Exception:
                logger.exception("cannot count event ratelimit.decision")
                return
        totals = self._totals
        totals[children[0]] += 1
        totals[children[1]] += 1
        if self.timer is None:
            self._added()

    def _decision_children(self, f: dict[str, Any]) -> tuple[Any, Any]:
        """The two children a decision with fields ``f`` adds to, cached by those fields."""
        key = (f.get("limit", "requests"), bool(f.get("allowed")), f.get("scope"))
        children = self._decisions.get(key)
        if children is None:
            children = (self._child(self.events, ("ratelimit.decision",)),
                        self._child(self.ratelimit, (key[0], "allowed" if key[1] else "rejected",
                                                     key[2])))
            if len(self._decisions) < 1000:
                self._decisions[key] = children
        return children

    def _event(self, name: str, fields: dict[str, Any]) -> None:
        """Count one event, generically and in its own family when it has one."""
        self._inc(self.events, (name,))
        handler = self._handlers.get(name)
        if handler is not None:
            handler(fields)

    def _on_fallback(self, f: dict[str, Any]) -> None:
        # Whether the fallback is active now is the rate-limit plugin's own gauge.
        if f.get("active"):
            self.fallbacks.inc()

    def _on_concurrency(self, f: dict[str, Any]) -> None:
        self._inc(self.concurrency_rejections, (f.get("scope"),))
        waited = f.get("waited_s")
        if isinstance(waited, int | float):
            self._observe(self.queue_wait.labels("rejected"), waited)

    def _on_retry(self, f: dict[str, Any]) -> None:
        self._inc(self.retries, (f.get("reason"),))

    def _on_breaker_transition(self, f: dict[str, Any]) -> None:
        self._inc(self.breaker_transitions, (f.get("from_state"), f.get("to_state")))

    def _on_breaker_rejected(self, f: dict[str, Any]) -> None:
        self._inc(self.breaker_rejections, (f.get("state"),))

    def _on_keypool(self, f: dict[str, Any]) -> None:
        self._inc(self.keypool_cooldowns, (f.get("key_index"), f.get("status")))

    def _on_guard(self, f: dict[str, Any]) -> None:
        self._inc(self.guard_detections, (f.get("rule"), f.get("mode")))

    def _on_auth(self, f: dict[str, Any]) -> None:
        self._inc(self.auth_denials, (f.get("status"), f.get("reason")))

    def _on_spooled(self, f: dict[str, Any]) -> None:
        self.spooled.inc(_count(f.get("records")))

    def _on_replayed(self, f: dict[str, Any]) -> None:
        self.replayed.inc(_count(f.get("records")))

    # --- scrape -------------------------------------------------------------------------

    async def refresh_health(self, app: web.Application) -> None:
        """Ask every plugin's ``readiness`` hook, each within the configured timeout."""
        checks: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, result in app[PLUGINS].call_all("readiness", app=app):
            try:
                async with asyncio.timeout(self.readiness_timeout):
                    report = await await_me_maybe(result)
            except Exception as exc:
                errors[name] = type(exc).__name__
                continue
            if isinstance(report, dict):
                checks.update(report)
        self.health.checks = checks
        self.health.errors = errors

    def exposition(self) -> bytes:
        """The text exposition of this application's metrics (all workers' in multi-process
        mode), with every request finished so far."""
        self.flush()
        return generate_latest(self.exposed)


def _sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the families in ``registry`` may expose."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in
                     ("_total", "_created", "_bucket", "_count", "_sum", "_info", "_gcount",
                      "_gsum"))
    return names


def _count(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


METRICS = web.AppKey("metrics_state", MetricsState)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Metrics settings."""
    return [
        Setting("metrics.owner_label", "bool", False,
                "Also label token counts by owner (one series per owner and model: enable "
                "only with a bounded number of owners).", env="SIDECAR_METRICS_OWNER_LABEL"),
        Setting("metrics.flush_seconds", "float", 0.5,
                "Finished requests are added to the metrics in batches, at most this long "
                "after they ended and always before a scrape (0: each at once).",
                env="SIDECAR_METRICS_FLUSH_SECONDS", minimum=0),
        Setting("metrics.readiness", "bool", True,
                "Run the readiness checks on each scrape and export dependency health.",
                env="SIDECAR_METRICS_READINESS"),
        Setting("metrics.readiness_timeout_seconds", "float", 2.0,
                "Longest wait for each readiness check during a scrape.",
                env="SIDECAR_METRICS_READINESS_TIMEOUT_SECONDS", minimum=0.01),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Build the registry, its families and (in multi-process mode) the aggregating view."""
    settings = app[SETTINGS]
    multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
    if multiproc_dir is not None:
        from prometheus_client import values

        # prometheus_client picks its value storage when it is first imported; a worker forked
        # by `serve --workers` may have imported it before the directory was set.
        values.ValueClass = values.get_value_class()
    forwarder = app.get(FORWARDER)
    state = MetricsState(
        owner_label=bool(settings["metrics.owner_label"]),
        readiness=bool(settings["metrics.readiness"]),
        readiness_timeout=float(settings["metrics.readiness_timeout_seconds"]),
        multiproc_dir=multiproc_dir,
        flush_interval=float(settings["metrics.flush_seconds"]),
        in_flight=(lambda: 0) if forwarder is None else (lambda: forwarder.in_flight),
    )
    state.loop = asyncio.get_running_loop()
    plugin_gauges = PluginGaugeCollector(app, state.own_names)
    health = HealthCollector(state.health)
    if multiproc_dir is not None:
        from prometheus_client import multiprocess

        exposed = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposed, path=multiproc_dir)
        state.exposed = exposed
        state.sample_in_flight_every(IN_FLIGHT_SAMPLE_SECONDS)
    state.exposed.register(plugin_gauges)
    if state.readiness:
        state.exposed.register(health)
    app[METRICS] = state


@hookimpl
def shutdown(app: web.Application) -> None:
    """Record what is queued; in multi-process mode, drop this worker's live gauges from the
    shared directory."""
    state = app.get(METRICS)
    if state is None:
        return
    state.flush()
    state.loop = None  # requests still finishing are recorded at once from now on
    if state.sampler is not None:
        state.sampler.cancel()
    if state.multiproc_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), state.multiproc_dir)


@hookimpl
def on_stream_event(ctx: RequestContext, event: SSEEvent) -> StopObserving | None:
    """Note when the first output token went to the caller; the rest of the stream is not
    needed (the relay calls this no more once it has returned ``STOP_OBSERVING``)."""
    name = event.event
    if name is None:
        data = event.data
        if data == "[DONE]" or (('"content":""' in data or '"content": ""' in data)
                                and '"tool_calls"' not in data):
            return None
    elif name not in _TOKEN_EVENTS:
        return None
    now = time.perf_counter()
    ctx.state[_STATE_FIRST_TOKEN] = now
    ctx.log["ttft_ms"] = round((now - ctx.timing.started) * 1000, 2)
    return STOP_OBSERVING


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Record the request, and its error if it ended in one."""
    metrics = ctx.app[METRICS]
    if ctx.error is None:
        metrics.request_finished(ctx)
    else:
        metrics.request_failed(ctx, ctx.error)


@hookimpl
def event_observer(app: web.Application, name: str
                   ) -> Callable[[RequestContext | None, dict[str, Any]], None]:
    """Count the events called ``name``; the limiter's decision, reported for nearly every
    request, straight into its two counters."""
    state = app.get(METRICS)
    if state is None:
        # Asked before this plugin started (a chain that lists the reporting plugin first):
        # the state is looked up with each event instead.
        def count_late(ctx: RequestContext | None, fields: dict[str, Any]) -> None:
            found = app.get(METRICS)
            if found is not None:
                found.event(name, fields)

        return count_late
    if name == "ratelimit.decision":
        return state.count_decision
    return lambda ctx, fields: state.event(name, fields)


@hookimpl
def metrics_exposition(app: web.Application) -> Any:
    """This plugin's part of ``/metrics`` (refreshing dependency health first)."""
    state = app[METRICS]
    if not state.readiness:
        return state.exposition()

    async def expose() -> bytes:
        await state.refresh_health(app)
        return state.exposition()

    return expose()
