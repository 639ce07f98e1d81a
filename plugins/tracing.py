"""The tracing plugin: W3C Trace Context upstream, trace ids in logs, optional OpenTelemetry.

Every request belongs to a trace. A caller that sends a valid ``traceparent`` header keeps its
trace: the header (and ``tracestate``) reach upstream unchanged, as every header does. A
caller that sends none gets one generated, and added to the upstream request. The trace id
goes into the access line and every log line of the request (``trace_id``), so a log search
finds the request from the caller's trace and a support ticket to the upstream can quote it.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set and the OpenTelemetry SDK installed
(``pip install 'mistral-sidecar[otel]'``: ``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http``), the sidecar also records spans and exports them
over OTLP/HTTP: one server span per request (named after the operation) and one client span
per upstream attempt (retries become separate spans; the backoff between them is the gap).
Without the variable nothing of OpenTelemetry is imported and the plugin costs a header and
two random numbers per request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from proxy import __version__, hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.errors import SidecarError, UpstreamError
from proxy.events import observes
from proxy.settings import Setting, Settings

__all__ = [
    "TRACING",
    "TraceParent",
    "TracingState",
    "parse_traceparent",
]

logger = logging.getLogger("mistral_sidecar.tracing")

_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

_SPAN = "tracing.span"
_OFFSET = "tracing.offset_ns"
_ATTEMPT_START = "tracing.attempt_start_ns"
_ATTEMPTS_RECORDED = "tracing.attempts_recorded"


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent`` header (W3C Trace Context level 1)."""

    version: str
    trace_id: str
    parent_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        """Whether the caller may have recorded its span."""
        return bool(self.flags & 1)


def parse_traceparent(value: str | None) -> TraceParent | None:
    """Parse ``value``; ``None`` when it is missing or invalid by the W3C rules."""
    if not value:
        return None
    value = value.strip()
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":
        return None
    return TraceParent(version, trace_id, parent_id, int(flags, 16))


class TracingState:
    """Trace-id generation and, when configured, the OpenTelemetry tracer and provider.

    ``random_bits`` (``random.getrandbits``) and ``wall_ns`` / ``perf`` (clocks) are
    injectable for tests.
    """

    def __init__(
        self,
        *,
        tracer: Any = None,
        provider: Any = None,
        upstream_host: str = "",
        random_bits: Callable[[int], int] = random.getrandbits,
        wall_ns: Callable[[], int] = time.time_ns,
        perf: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.tracer = tracer
        self.provider = provider
        self.upstream_host = upstream_host
        self.random_bits = random_bits
        self.wall_ns = wall_ns
        self.perf = perf

    def new_trace_id(self) -> str:
        """32 lowercase hex digits, never all zero."""
        return f"{self.random_bits(128) or 1:032x}"

    def new_span_id(self) -> str:
        """16 lowercase hex digits, never all zero."""
        return f"{self.random_bits(64) or 1:016x}"

    async def flush(self) -> None:
        """Export every finished span now (off the event loop: the exporter blocks)."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.force_flush)

    async def close(self) -> None:
        """Flush and stop the exporter."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)
            self.provider = None
            self.tracer = None


TRACING = web.AppKey("tracing_state", TracingState)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """OpenTelemetry export settings, read from OpenTelemetry's standard ``OTEL_*``
    variables: platforms that inject them (collectors as sidecars, agents) configure the
    sidecar like any other instrumented service."""
    return [
        Setting("tracing.otlp_endpoint", "str", "",
                "OTLP/HTTP collector base URL (spans go to <url>/v1/traces); empty: no spans, "
                "only trace-context propagation.",
                env="OTEL_EXPORTER_OTLP_ENDPOINT"),
        Setting("tracing.otlp_headers", "str", "",
                "Headers for the collector, as key=value pairs separated by commas.",
                env="OTEL_EXPORTER_OTLP_HEADERS", secret=True),
        Setting("tracing.service_name", "str", "mistral-sidecar",
                "service.name of the exported spans.", env="OTEL_SERVICE_NAME"),
        Setting("tracing.sample_ratio", "float", 1.0,
                "Share of new traces recorded (a caller's sampling decision is followed).",
                minimum=0,
                check=lambda v: None if v <= 1 else "must be at most 1"),
    ]


def _headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def _open_tracer(settings: Settings) -> tuple[Any, Any] | None:
    """The tracer and provider exporting to the configured collector, or ``None`` if the
    OpenTelemetry SDK is not installed."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        logger.warning("tracing.otlp_endpoint is set but the OpenTelemetry SDK is not "
                       "installed (pip install 'mistral-sidecar[otel]'); spans are not recorded")
        return None
    endpoint = str(settings["tracing.otlp_endpoint"]).rstrip("/") + "/v1/traces"
    provider = TracerProvider(
        resource=Resource.create({
            "service.name": settings["tracing.service_name"],
            "service.version": __version__,
            # Both spellings: the current semantic convention and the one most backends
            # (Datadog's env, Grafana, Jaeger) still read.
            "deployment.environment.name": settings["environment"],
            "deployment.environment": settings["environment"],
        }),
        sampler=ParentBased(TraceIdRatioBased(float(settings["tracing.sample_ratio"]))),
    )
    exporter = OTLPSpanExporter(endpoint=endpoint,
                                headers=_headers(settings["tracing.otlp_headers"]))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider.get_tracer("mistral_sidecar", __version__), provider


@hookimpl
def startup(app: web.Application) -> None:
    """Set up the exporter when a collector is configured."""
    settings = app[SETTINGS]
    upstream_host = urlsplit(str(settings["upstream.base_url"])).hostname or ""
    tracer = provider = None
    if settings["tracing.otlp_endpoint"]:
        opened = _open_tracer(settings)
        if opened is not None:
            tracer, provider = opened
    app[TRACING] = TracingState(tracer=tracer, provider=provider, upstream_host=upstream_host)


@hookimpl
def shutdown(app: web.Application) -> Any:
    """Export what is left."""
    state = app.get(TRACING)
    return state.close() if state is not None else None


# --- requests --------------------------------------------------------------------------------


def _incoming(ctx: RequestContext) -> tuple[bool, TraceParent | None]:
    """(whether the caller sent ``traceparent``, the parsed header if it is valid)."""
    values = ctx.request.headers.getall("traceparent", ())
    if not values:
        return False, None
    # Two traceparent headers are invalid together (W3C Trace Context, section 3.2).
    return True, parse_traceparent(values[0]) if len(values) == 1 else None


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Join the caller's trace or start one; with OpenTelemetry, open the request span."""
    state = ctx.app[TRACING]
    sent, parent = _incoming(ctx)
    if state.tracer is not None:
        _start_span(state, ctx, parent, propagate=not sent)
        return
    trace_id = parent.trace_id if parent is not None else state.new_trace_id()
    if not sent:
        ctx.upstream_headers["traceparent"] = f"00-{trace_id}-{state.new_span_id()}-01"
    # A malformed header still reaches upstream as the caller sent it (headers pass through);
    # adding a second one would only make both invalid.
    ctx.log["trace_id"] = trace_id


def _start_span(state: TracingState, ctx: RequestContext, parent: TraceParent | None,
                propagate: bool) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

    context = None
    if parent is not None:
        remote = SpanContext(int(parent.trace_id, 16), int(parent.parent_id, 16),
                             is_remote=True, trace_flags=TraceFlags(parent.flags & 1))
        context = trace.set_span_in_context(NonRecordingSpan(remote))
    offset = state.wall_ns() - int(state.perf() * 1e9)
    ctx.state[_OFFSET] = offset
    attributes: dict[str, Any] = {
        "http.request.method": ctx.method,
        "url.path": ctx.path,
        "mistral_sidecar.operation": ctx.operation_name,
        "mistral_sidecar.request_id": ctx.request_id,
    }
    span = state.tracer.start_span(
        ctx.operation_name, context=context, kind=SpanKind.SERVER,
        start_time=int(ctx.timing.started * 1e9) + offset, attributes=attributes)
    ctx.state[_SPAN] = span
    span_context = span.get_span_context()
    trace_id = f"{span_context.trace_id:032x}"
    ctx.log["trace_id"] = trace_id
    ctx.log["span_id"] = f"{span_context.span_id:016x}"
    if propagate:
        flags = "01" if span_context.trace_flags.sampled else "00"
        ctx.upstream_headers["traceparent"] = (
            f"00-{trace_id}-{span_context.span_id:016x}-{flags}")


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall | None:
    """With OpenTelemetry: time each upstream attempt for its own span."""
    state = ctx.app[TRACING]
    if state.tracer is None or _SPAN not in ctx.state:
        return None

    async def traced(ctx: RequestContext) -> UpstreamResponse:
        ctx.state[_ATTEMPT_START] = state.wall_ns()
        try:
            response = await call(ctx)
        except SidecarError as error:
            _record_attempt(state, ctx, state.wall_ns(), None, error)
            raise
        _record_attempt(state, ctx, state.wall_ns(), response.status, None)
        return response

    return traced


def _record_attempt(state: TracingState, ctx: RequestContext, end_ns: int,
                    status: int | None, error: SidecarError | str | None) -> None:
    """Emit the span of the attempt that just ended, if it reached the upstream call."""
    recorded = ctx.state.get(_ATTEMPTS_RECORDED, 0)
    if ctx.attempts <= recorded:
        return  # refused before any request was sent (breaker open, key pool empty ...)
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    number = recorded + 1
    ctx.state[_ATTEMPTS_RECORDED] = number
    attributes: dict[str, Any] = {"http.request.method": ctx.method,
                                  "server.address": state.upstream_host,
                                  "mistral_sidecar.attempt": number}
    if number > 1:
        attributes["http.request.resend_count"] = number - 1
    if status is not None:
        attributes["http.response.status_code"] = status
    if isinstance(error, UpstreamError):
        attributes["error.type"] = error.reason
    elif isinstance(error, SidecarError):
        attributes["error.type"] = error.code
    elif isinstance(error, str):
        attributes["error.type"] = error
    parent = trace.set_span_in_context(ctx.state[_SPAN])
    span = state.tracer.start_span(
        f"upstream {ctx.operation_name}", context=parent, kind=SpanKind.CLIENT,
        start_time=ctx.state.get(_ATTEMPT_START, end_ns), attributes=attributes)
    if error is not None or (status is not None and status >= 500):
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=end_ns)


@hookimpl
@observes("retry.attempt")
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """A retry closes the failed attempt's span; the next starts after the backoff."""
    if name != "retry.attempt" or ctx is None or _SPAN not in ctx.state:
        return
    state = app[TRACING]
    now = state.wall_ns()
    reason = fields.get("reason")
    status = ctx.upstream_status if isinstance(reason, str) and reason.startswith("http_") \
        else None
    _record_attempt(state, ctx, now, status, reason if isinstance(reason, str) else "retry")
    delay = fields.get("delay_s")
    ctx.state[_ATTEMPT_START] = now + int(float(delay) * 1e9 if isinstance(delay, int | float)
                                          else 0)


def _end_span(ctx: RequestContext, error: SidecarError | None) -> None:
    span = ctx.state.pop(_SPAN, None)
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    status = ctx.response_status
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    span.set_attribute("mistral_sidecar.attempts", ctx.attempts)
    model = ctx.resource_ids.get("model")
    if model:
        span.set_attribute("gen_ai.request.model", model)
    usage = ctx.usage if status is not None and status < 400 else None
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    if ctx.outcome is not None:
        span.set_attribute("mistral_sidecar.outcome", ctx.outcome.value)
    if error is not None:
        span.set_attribute("error.type", error.code)
    if error is not None or (status is not None and status >= 500):
        span.set_status(Status(StatusCode.ERROR))
    finished = ctx.timing.finished if ctx.timing.finished is not None else time.perf_counter()
    span.end(end_time=int(finished * 1e9) + ctx.state.get(_OFFSET, 0))


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Close the request span (as failed when the request ended in an error)."""
    if _SPAN in ctx.state:
        _end_span(ctx, ctx.error)
