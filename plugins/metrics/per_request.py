"""What each request adds to the metrics once it has ended: the request itself, its
durations, upstream attempts, tokens and what they cost, a stream's first token and speed,
conversations, errors; and the requests in flight meanwhile.

Each family is called through :class:`~plugins.metrics.children.Children`:
``self.requests(operation, method, status)`` is ``requests.labels(operation, method,
status)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plugins.metrics.children import Children
from plugins.metrics.labels import OTHER, BoundedValues
from proxy.context import RequestContext, Usage

__all__ = ["LATENCY_BUCKETS", "PREFIX", "RequestMetrics"]

PREFIX = "mistral_sidecar_"

#: Seconds; from a cached embedding (a few ms) to a long agent run with tools (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                   60.0, 120.0)
TOKENS_PER_SECOND_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0,
                             300.0, 500.0, 1000.0)
ENTRY_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONVERSATION_OPS = frozenset({
    "conversations.start", "conversations.start_stream",
    "conversations.append", "conversations.append_stream",
    "conversations.restart", "conversations.restart_stream",
})
_START_OPS = frozenset({"conversations.start", "conversations.start_stream"})
#: Status label of a request whose caller left before any status was decided (nginx's 499).
CLIENT_CLOSED = "499"
#: ``ctx.state`` key: this request was counted in flight (and must be counted out).
_IN_FLIGHT = "metrics.in_flight"
#: Kinds of request whose series are kept at hand (each kind is a handful of children).
_KINDS_KEPT = 1000


class _Kind(NamedTuple):
    """The series every request of one kind (operation, method, status, streamed or not)
    adds to."""

    requests: Counter
    duration: Histogram
    upstream_duration: Histogram
    attempts: Counter


class RequestMetrics:
    """The per-request metric families of one registry, and what a request adds to them."""

    def __init__(self, registry: CollectorRegistry, *, owner_label: bool,
                 in_flight: Callable[[], float] | None) -> None:
        """Create the families in ``registry``. ``in_flight`` reads the number of requests in
        flight when a scrape asks (one process); without it, each request is counted in and
        out of the gauge (several workers, whose counts prometheus_client adds up)."""
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Children[Counter]:
            return Children(Counter(PREFIX + name, doc, labels, registry=registry))

        def histogram(name: str, doc: str, labels: tuple[str, ...],
                      buckets: tuple[float, ...]) -> Children[Histogram]:
            return Children(Histogram(PREFIX + name, doc, labels, buckets=buckets,
                                      registry=registry))

        op = ("operation",)
        self.owner_label = owner_label
        self.requests = counter(
            "requests", "Requests answered, by operation, method and status.",
            ("operation", "method", "status"))
        self.request_duration = histogram(
            "request_duration_seconds", "Time from the request's arrival to the end of its "
            "response, by operation and whether it was streamed.", ("operation", "stream"),
            LATENCY_BUCKETS)
        self.upstream_duration = histogram(
            "upstream_duration_seconds", "Time from the first upstream attempt to the end of "
            "the response (retries and backoff included).", op, LATENCY_BUCKETS)
        self.ttft = histogram(
            "time_to_first_token_seconds",
            "Streams: time from the request's arrival to its first output token.",
            ("operation", "model"), LATENCY_BUCKETS)
        self.tokens_per_second = histogram(
            "stream_output_tokens_per_second",
            "Streams: completion tokens per second after the first token.",
            ("operation", "model"), TOKENS_PER_SECOND_BUCKETS)
        self.tokens = counter(
            "tokens", "Tokens reported in upstream usage, by model and kind (prompt, "
            "completion).", ("model", "kind", "owner") if owner_label else ("model", "kind"))
        # Read from ``ctx.usage.cost``, set by a pricing plugin that ends requests first.
        self.cost = counter(
            "cost", "Cost of the requests priced, in the price table's currency, by model and "
            "the caller's organisation.", ("model", "org"))
        self.errors = counter(
            "errors", "Errors the sidecar answered itself (or streams that broke), by "
            "operation and error code.", ("operation", "code"))
        self.attempts = counter(
            "upstream_attempts", "Requests sent upstream, retries included.", op)
        # "livesum": in multi-process mode, the sum over the workers still running.
        self.in_flight = Gauge(
            PREFIX + "requests_in_flight", "Requests received and not yet answered.",
            registry=registry, multiprocess_mode="livesum")
        self.counts_in_flight = in_flight is None
        if in_flight is not None:
            self.in_flight.set_function(in_flight)
        self.conversations_started = counter(
            "conversations_started", "Conversations started successfully, by whether an "
            "agent or a model answers them.", ("target",))
        self.conversation_entries = histogram(
            "conversation_entries", "Output entries per conversation response "
            "(entry_count).", op, ENTRY_BUCKETS)
        self.conversation_duration = histogram(
            "conversation_duration_seconds", "Duration of conversation requests (start, "
            "append, restart), streamed or not.", op, LATENCY_BUCKETS)

        # Values upstream or callers choose; operations and methods are bounded already.
        self.models = BoundedValues(100)
        self.owners = BoundedValues(1000)
        self.orgs = BoundedValues(1000)
        self.statuses = BoundedValues(50)
        self.error_codes = BoundedValues(50)
        self._kinds: dict[tuple[str, str, int | None, bool], _Kind] = {}
        self._tokens: dict[tuple[str, ...], tuple[Counter, Counter]] = {}

    def started(self, ctx: RequestContext) -> None:
        """A request arrived: where requests are counted in and out, it is in flight until
        :meth:`ended`."""
        if self.counts_in_flight:
            self.in_flight.inc()
            ctx.state[_IN_FLIGHT] = True

    def ended(self, ctx: RequestContext) -> None:
        """A request ended, however it did: record it."""
        # A request refused before this plugin saw it was never counted in.
        if ctx.state.pop(_IN_FLIGHT, False):
            self.in_flight.dec()
        operation = ctx.operation_name
        status = ctx.response_status
        key = (operation, ctx.method, status, ctx.is_stream)
        kind = self._kinds.get(key) or self._kind(key)
        kind.requests.inc()
        timing = ctx.timing
        # The core sets ``timing.finished`` before it calls on_end.
        finished = timing.finished or timing.started
        duration = finished - timing.started
        kind.duration.observe(duration)
        if timing.upstream_started is not None:
            kind.upstream_duration.observe(finished - timing.upstream_started)
        if ctx.attempts:
            kind.attempts.inc(ctx.attempts)
        if ctx.error is not None:
            self.errors(operation, self.error_codes(ctx.error.code)).inc()
        if status is not None and 200 <= status < 300:
            self._succeeded(ctx, operation, duration)
        elif status is None:
            # Gone before any answer: what it cost is the estimate of what it used.
            usage = ctx.usage
            if usage is not None:
                self._cost(ctx, usage, self._model(ctx))

    def _kind(self, key: tuple[str, str, int | None, bool]) -> _Kind:
        """The series of requests of kind ``key`` (operation, method, status, stream)."""
        operation, method, status, stream = key
        kind = _Kind(
            self.requests(operation, method if method in _METHODS else OTHER,
                          CLIENT_CLOSED if status is None else self.statuses(status)),
            self.request_duration(operation, "true" if stream else "false"),
            self.upstream_duration(operation),
            self.attempts(operation))
        # The key holds the raw method and status: keep at most so many.
        if len(self._kinds) < _KINDS_KEPT:
            self._kinds[key] = kind
        return kind

    def _succeeded(self, ctx: RequestContext, operation: str, duration: float) -> None:
        """Tokens, stream speed and conversations: what only a successful answer reports."""
        usage = ctx.usage
        first_token = ctx.timing.first_token
        if usage is not None or first_token is not None:
            model = self._model(ctx)
            if usage is not None:
                prompt, completion = self._token_counters(ctx, model)
                # Upstream's numbers: a negative one would make the counter raise.
                prompt.inc(max(0, usage.prompt_tokens))
                completion.inc(max(0, usage.completion_tokens))
                self._cost(ctx, usage, model)
            if first_token is not None:
                self.ttft(operation, model).observe(first_token - ctx.timing.started)
                generating = (ctx.timing.finished or first_token) - first_token
                if usage is not None and usage.completion_tokens > 1 and generating > 0:
                    self.tokens_per_second(operation, model).observe(
                        (usage.completion_tokens - 1) / generating)
        if operation in _CONVERSATION_OPS:
            self._conversation(ctx, operation, duration)

    def _cost(self, ctx: RequestContext, usage: Usage, model: str) -> None:
        """Add what the request cost, if it was priced and cost something (a counter only
        goes up)."""
        cost = usage.cost
        if cost is not None and cost > 0:
            identity = ctx.identity
            org = self.orgs(identity.org) if identity is not None else "unknown"
            self.cost(model, org).inc(float(cost))

    def _token_counters(self, ctx: RequestContext, model: str) -> tuple[Counter, Counter]:
        """The prompt and completion token counters of ``model`` (and the caller's owner)."""
        key: tuple[str, ...] = (model,)
        if self.owner_label:
            key = (model, self.owners(ctx.identity.owner if ctx.identity is not None
                                      else "anonymous"))
        counters = self._tokens.get(key)
        if counters is None:
            counters = self._tokens[key] = (self.tokens(key[0], "prompt", *key[1:]),
                                            self.tokens(key[0], "completion", *key[1:]))
        return counters

    def _model(self, ctx: RequestContext) -> str:
        """The model that answered (bounded), ``"unknown"`` when nothing says."""
        body = ctx.response_json
        model: Any = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            model = ctx.resource_ids.get("model")
        if not model and isinstance(body, dict):
            # A conversation names the model on its output entries.
            for entry in body.get("outputs") or ():
                if isinstance(entry, dict) and isinstance(entry.get("model"), str):
                    model = entry["model"]
                    break
        return self.models(model) if model else "unknown"

    def _conversation(self, ctx: RequestContext, operation: str, duration: float) -> None:
        self.conversation_duration(operation).observe(duration)
        body = ctx.response_json
        if isinstance(body, dict) and isinstance(body.get("outputs"), list):
            self.conversation_entries(operation).observe(len(body["outputs"]))
        if operation in _START_OPS:
            target = "agent" if ctx.resource_ids.get("agent_id") else "model"
            self.conversations_started(target).inc()
