"""Hook specifications: every extension point of the sidecar, in the order a request meets them.

Plugins are ordinary pluggy plugins (usually modules) that implement some of these hooks with
``@proxy.hookimpl``. Built-in plugins live in ``plugins/``; third-party plugins register under
the entry-point group ``mistral_sidecar``. Which plugins run, and in which order, is the
``plugins.chain`` setting: the core calls implementations strictly in chain order.

Hook calls are synchronous. A hook that needs to do I/O returns an awaitable, and the core
awaits the results one plugin at a time, in chain order, stopping early where a hook says it
short-circuits. Returning ``None`` means "nothing to do". Plugins keep their state on the
aiohttp application under their own ``web.AppKey``, never in module globals.

Lifecycle of one request:

1. ``on_request`` — every plugin in order; any may reject (raise
   :class:`proxy.errors.SidecarError`) or answer itself (return a response).
2. ``wrap_upstream`` — plugins wrap the upstream call (retry, circuit breaker, key pool);
   the first plugin in the chain is the outermost wrapper.
3. ``on_response`` — upstream status and headers are known; nothing sent to the caller yet.
4. ``on_stream_event`` — each server-sent event as it passes, after it was written.
5. ``on_end`` — exactly once, however the request ended: answered, rejected, answered by a
   plugin, upstream failed, a stream broke, the caller went away, or anything raised.
   ``ctx.outcome`` says which (:class:`proxy.context.Outcome`), ``ctx.error`` holds the error
   the sidecar answered with or that cut a started response short.

Code that is not handed the request context (a logging filter, a library callback) finds the
request its task is handling in :data:`proxy.context.CURRENT_REQUEST`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypedDict

import pluggy

from proxy import PROJECT_NAME, StopObserving

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
    from proxy.event_registry import EventSpec
    from proxy.settings import Setting, Settings
    from proxy.sse import SSEEvent

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# --- configuration and CLI -------------------------------------------------------------------


@hookspec
def sidecar_settings() -> list[Setting] | None:
    """Declare the plugin's settings.

    Return a list of :class:`proxy.settings.Setting`. Each has a dotted name (its path in the
    YAML file), usually an environment variable, a type, a default and a one-line help text.
    ``check-config`` validates them and the README's configuration reference lists them.
    Called once at start-up, for enabled plugins only.
    """


@hookspec
def validate_settings(settings: Settings) -> list[str] | None:
    """Check combinations of settings that one setting alone cannot.

    Return a list of problems, one line each, naming the setting (for example
    ``"MISTRAL_API_KEY: required when SIDECAR_AUTH_MODE=keys"``). Any problem stops start-up.
    Check what only serving needs (the upstream key, say) only when ``settings.serving``:
    management commands (``keys``, ``migrate``, ``usage`` ...) run without it.
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add subcommands to the ``mistral-sidecar`` CLI.

    Add a parser with ``subparsers.add_parser(name, help=...)`` and set its handler with
    ``parser.set_defaults(handler=func)``; ``func(args, settings) -> int`` returns the exit code.
    Called for every installed plugin in the chain, before arguments are parsed.
    """


class UsageSection(TypedDict):
    """One section a plugin adds to ``mistral-sidecar usage`` (:func:`usage_report_sections`).

    ``name`` is its key under ``"sections"`` in ``usage --json --sections`` (lower case,
    unique in the chain); ``title`` the line above it in the table output; ``text`` what the
    table output shows under the title (lines ending in a newline); ``rows`` the same as JSON
    objects (what ``--json`` of the plugin's own command prints, ideally).
    """

    name: str
    title: str
    text: str
    rows: list[dict[str, Any]]


@hookspec
def usage_report_sections(settings: Settings, db: Any, owner: str | None, since: str | None
                          ) -> Awaitable[list[UsageSection] | None] | list[UsageSection] | None:
    """Add sections to the ``mistral-sidecar usage`` report, after its own table.

    Called by the ``usage`` command (the persistence plugin's), in chain order, each result
    awaited before the next plugin is called: for the table output always, for JSON only with
    ``--json --sections`` (plain ``--json`` prints the list of usage rows, as it always did,
    and calls no plugin). ``db`` is the store's open database
    (:class:`plugins.store.db.Database`); ``owner`` is ``--owner`` (``None``: everyone) and
    ``since`` is ``--since`` as canonical UTC text (``None``: from the start). Narrow what
    you show by them where they mean something to you, and say in the title what you show
    otherwise ("this period").

    Return a list of :class:`UsageSection` (or an awaitable of one), or ``None`` (or ``[]``)
    when there is nothing to show: then the report is exactly what it would be without the
    plugin. The table output prints each section as a blank line, its title and its
    ``text``; ``--json --sections`` prints ``{"usage": [rows], "sections": {name: {"title":
    ..., "rows": [...]}}}``. Two plugins reporting one ``name`` make the command fail. What
    an implementation raises fails the command too: a dependency it cannot reach should be
    a note on standard error and a section without those figures instead. The budgets
    plugin shows the budgets in force with their spend this period::

        @hookimpl
        def usage_report_sections(settings, db, owner):
            async def sections():
                rows = await budget_rows(settings, db, owner=owner)
                if not rows:
                    return None
                return [UsageSection(name="budgets", title="Budgets this period",
                                     text=format_rows(rows), rows=rows)]
            return sections()
    """


# --- application lifecycle -------------------------------------------------------------------


@hookspec
def startup(app: web.Application) -> Awaitable[None] | None:
    """Open the plugin's resources (pools, clients, background tasks) and store them on ``app``.

    Called in chain order before the first request; a failure stops start-up. Settings are at
    ``app[proxy.app.SETTINGS]``, the upstream HTTP session at ``app[proxy.app.HTTP_SESSION]``.
    """


@hookspec
def shutdown(app: web.Application) -> Awaitable[None] | None:
    """Release what ``startup`` opened: flush queues, close pools, stop tasks.

    Called in reverse chain order after in-flight requests have drained on SIGTERM.
    """


@hookspec
def readiness(app: web.Application) -> Awaitable[dict[str, Any]] | dict[str, Any] | None:
    """Report the health of the plugin's dependencies for ``/readyz``.

    Return a mapping such as ``{"redis": {"ok": True, "latency_ms": 0.4}}``. Any entry with
    ``"ok": False`` makes ``/readyz`` answer 503. Entries may carry extra detail (breaker state,
    spool size); they must not carry secrets. Keep it fast: it is polled by orchestrators.
    """


@hookspec
def metrics_exposition(app: web.Application) -> Awaitable[bytes] | bytes | None:
    """Return Prometheus text exposition (bytes or text) to append to ``/metrics``.

    For series a plugin keeps in a registry of its own (the metrics plugin's) or computes on
    a scrape; plain gauges are simpler through ``gauges``. Called on every scrape, on the
    event loop: keep it fast. What it raises answers the scrape with a Mistral-shaped 500.
    """


@hookspec
def register_routes(app: web.Application) -> list[web.RouteDef] | None:
    """Add HTTP routes of the plugin's own (an admin API, say) to the sidecar.

    Return a list of ``aiohttp.web.RouteDef`` (``web.get(path, handler)``,
    ``web.route("*", path, handler)`` ...). Called once when the application is made, in
    chain order, after ``sidecar_events`` and before any ``startup``
    (``app[proxy.app.SETTINGS]``, ``app[proxy.app.PLUGINS]`` and ``app[proxy.app.OPS]`` are
    set). They are served next to ``/healthz``, ``/readyz``, ``/metrics`` and the API, before
    the catch-all 404; a route on one of those paths or under ``/v1`` or ``/v2`` stops
    start-up (:class:`proxy.settings.ConfigError`), so no plugin can shadow them. These
    handlers are plain aiohttp handlers, outside the request lifecycle below (no
    ``on_request`` or ``on_end`` runs for them): they authenticate the caller themselves and
    answer errors in Mistral's shape (:class:`proxy.errors.SidecarError`).
    """


# --- one request -----------------------------------------------------------------------------


@hookspec
def on_request(ctx: RequestContext) -> Awaitable[web.StreamResponse | None] | None:
    """Inspect, change or reject a request before anything goes upstream.

    Authentication, validation, input sanitising and rate limiting hang here. The context
    carries the classified operation, path parameters, resource ids and (for JSON requests) the
    parsed body at ``ctx.json``; a plugin that changes the body calls ``ctx.set_json(...)``.

    To reject, raise :class:`proxy.errors.SidecarError`. To answer without going upstream,
    return (or resolve to) an ``aiohttp.web.StreamResponse``. Either stops the chain: later
    plugins' ``on_request`` are not called. Observers still hear of it in ``on_end``
    (``ctx.outcome`` is ``ERROR`` or ``ANSWERED``; ``ctx.upstream_status`` is ``None``). Any
    other exception is a bug: the caller gets a Mistral-shaped 500 (``internal_error``) and
    the traceback is logged.
    """


@hookspec
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall | None:
    """Wrap the upstream call with around-advice (retry, circuit breaker, key pool ...).

    ``call`` is an async function ``call(ctx) -> UpstreamResponse`` that sends the request and
    returns once upstream's status and headers are known, before any body byte reaches the
    caller. Return a new async function with the same signature that calls ``call`` zero or
    more times, or ``None`` to leave it unwrapped. The first plugin in the chain ends up
    outermost. A wrapper that discards a response must call ``await response.release()``.
    Raise :class:`proxy.errors.SidecarError` to answer with an error instead.
    """


@hookspec
def on_response(ctx: RequestContext, response: UpstreamResponse) -> Awaitable[None] | None:
    """Upstream answered; status and headers are known and nothing was sent to the caller.

    Add headers for the caller to ``ctx.response_headers`` (rate-limit headers, attempt
    counts). Upstream's own headers must not be removed or relaxed. To receive the whole
    JSON body in ``rewrite_response`` before it is sent, set ``ctx.buffer_response = True`` in
    ``on_request``: the core then also asks upstream for an uncompressed body.
    """


@hookspec
def rewrite_response(ctx: RequestContext, body: Any) -> Awaitable[Any] | Any:
    """Rewrite a buffered JSON response body before it is sent (only when
    ``ctx.buffer_response`` is true and the response is JSON).

    Return the new body, or ``None`` to keep it. Used, for example, to filter list results to
    what the caller may see. Streams are never buffered.
    """


@hookspec
def on_stream_event(ctx: RequestContext, event: SSEEvent) -> StopObserving | None:
    """Observe one server-sent event right after it was forwarded to the caller.

    Synchronous on purpose: it must not delay the stream. Keep it cheap (count, record, queue);
    the reassembled whole arrives later in ``on_end``. A stream carries an event per
    token: an implementation that has seen what it wants of this stream (its first token, an
    id announced at the start) returns :data:`proxy.STOP_OBSERVING`, and is not called again
    for the rest of it.
    """


@hookspec
def on_end(ctx: RequestContext) -> Awaitable[None] | None:
    """The request has ended: called exactly once per request, for every request.

    ``ctx.outcome`` (:class:`proxy.context.Outcome`) says how: ``OK`` (upstream answered and
    the answer was relayed in full, whatever its status: upstream errors are ordinary
    answers), ``ANSWERED`` (a plugin answered in ``on_request``), ``ERROR`` (the sidecar
    answered with an error of its own: a rejection, upstream unreachable, an exception),
    ``BROKEN`` (a response that had started was cut short: upstream broke off, or the sidecar
    failed mid-stream) or ``CLIENT_GONE`` (the caller hung up first). ``ctx.error`` is the
    :class:`proxy.errors.SidecarError` of ``ERROR`` and ``BROKEN``, else ``None``.
    ``ctx.response_status``, ``ctx.response_json`` (the parsed body, or the object reassembled
    from a stream), ``ctx.usage`` and ``ctx.timing`` are filled in as far as the request got.
    A JSON call upstream bills whose caller hung up (``CLIENT_GONE``) ends once upstream
    answered it: ``ctx.response_json`` and ``ctx.usage`` are that answer's, while
    ``ctx.response_status`` stays ``None`` (the caller got nothing). A call upstream bills by
    usage that was cut short after it reached upstream (``BROKEN``, ``CLIENT_GONE``: no usage
    reported) carries the core's estimate instead, with
    ``ctx.usage.estimated`` true (:mod:`proxy.estimate`): charge it as usage, show it as an
    estimate. ``ctx.usage.cost`` (a ``Decimal`` in ``ctx.usage.currency``) is what the
    request cost, set by the prices plugin, which ends each request before the plugins after
    it; ``None`` when nothing priced it or its model has no price (the cost is unknown, never
    guessed).

    Persistence, usage accounting, metrics and access logging hang here. It runs to
    completion even when the caller has gone (the core shields it from the handler's
    cancellation and waits for it at shutdown), in chain order, each awaitable result awaited
    before the next plugin is called, for at most 30 seconds each. It is observation only:
    what it raises is logged and never changes the answer. The caller's connection is reused
    only after it returns, so do slow work in the background.
    """


# --- events and gauges (observability without coupling) --------------------------------------


@hookspec
def sidecar_events(app: web.Application) -> list[EventSpec] | None:
    """Declare the events the plugin emits.

    Return a list of :class:`proxy.event_registry.EventSpec`: each event's name (dotted, the
    plugin's name first), what it means, its fields, the level of its log line (a rule may
    make it depend on a field) and the metric families it feeds
    (:class:`proxy.event_registry.EventMetric`, counters or histograms). The logs and metrics
    plugins read levels and families from here; :func:`proxy.events.emit` refuses a name no
    plugin in the chain declares. Called once when the application is made, before any
    ``startup`` (``app[proxy.app.SETTINGS]`` and ``app[proxy.app.PLUGINS]`` are set). Two
    plugins declaring one event, or feeding one family, stop start-up.
    """


@hookspec
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """Observe an event another plugin reported with :func:`proxy.events.emit`.

    Plugins report what operators care about as named events with flat, JSON-safe fields,
    never secrets or message text; the logging plugin writes each as a log line and the metrics
    plugin counts them. ``ctx`` is the request it belongs to, or ``None`` for background work.
    Synchronous and cheap: it runs on the request path. An implementation that wants only
    some events says which with :func:`proxy.events.observes` and is not called for the
    others. Names in use (each declared by the plugin reporting it, in ``sidecar_events``):

    - ``ratelimit.decision`` {limit: "requests"|"tokens", allowed: bool, remaining, scope}
    - ``ratelimit.fallback`` {active: bool, reason} — Redis unusable, in-process limiter used
    - ``concurrency.rejected`` {scope, waited_s, reason}, ``concurrency.admitted`` {waited_s}
      (after waiting for a slot)
    - ``retry.attempt`` {attempt, reason, delay_s}
    - ``breaker.transition`` {from_state, to_state}
    - ``breaker.rejected`` {state}
    - ``keypool.cooldown`` {key_index, status, seconds}
    - ``guard.detection`` {rule, field, mode}
    - ``moderation.call`` {status, http_status, seconds, texts},
      ``moderation.decision`` {decision, cached, categories}
    - ``output_guard.detection`` {pattern, field, count, action}
    - ``auth.denied`` {status, reason}
    - ``persistence.spooled`` {records}, ``persistence.replayed`` {records},
      ``persistence.write_failed`` {error}
    - ``prices.cost`` {model, org, cost, currency}, ``prices.unpriced`` {model, org},
      ``prices.unknown_model`` {model} (once per model)
    """


@hookspec
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """Report current values as ``(name, labels, value)`` for ``/metrics``.

    Names are snake_case with their unit (``persistence_queue_depth``,
    ``persistence_spool_bytes``, ``breaker_state``, ``inflight_requests``); the metrics plugin
    exports each as a gauge ``mistral_sidecar_<name>``. Labels must have bounded values (no
    ids). Called on every scrape: keep it cheap and non-blocking.
    """
