"""The persistence plugin: agents, conversations, every entry and a usage log, losing nothing.

It records what passes through the sidecar into the store plugin's database (PostgreSQL, or
the embedded SQLite file) and must come after ``store`` in the chain. Nothing is written on the
request path: ``on_end`` turns the ended request into records (:mod:`.capture`) and
hands them to the write-behind pipeline (:mod:`.pipeline`), which spools them to disk at once
and commits them in batches in the background. A database outage costs requests nothing; if
the spool fills up, requests that would be recorded get 503 (``SIDECAR_SPOOL_FULL_POLICY``).

Reading back: ``mistral-sidecar conversations show ID`` and ``mistral-sidecar usage``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from plugins.persistence import commands
from plugins.persistence.capture import (
    MODEL_CALLS,
    RECORDED_OPERATIONS,
    Exchange,
    base_operation,
    records_for,
    usage_record,
)
from plugins.persistence.config import Options, declared
from plugins.persistence.pipeline import WriteBehind
from plugins.persistence.records import Record, cost_nanos
from plugins.persistence.retention import RetentionPurger
from plugins.persistence.spool import Spool
from plugins.store import DATABASE
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import Outcome, RequestContext
from proxy.errors import SidecarError
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emit
from proxy.settings import Setting

__all__ = ["PERSISTENCE", "Persistence"]


@dataclass
class Persistence:
    """The plugin's state on the application."""

    options: Options
    pipeline: WriteBehind
    purger: RetentionPurger | None
    #: Record ids: a random per-process prefix and a counter (unique without a syscall each).
    id_prefix: str = field(default_factory=lambda: os.urandom(8).hex())
    id_counter: Iterator[int] = field(default_factory=itertools.count)

    def new_id(self) -> str:
        """A new record id (32 hex digits, like a request id the core makes)."""
        # %-formatting: an f-string's format spec goes through the general formatter, which
        # costs several times more on this per-request path.
        return "%s%016x" % (self.id_prefix, next(self.id_counter))  # noqa: UP031


PERSISTENCE = web.AppKey("persistence", Persistence)

#: Records go to the store plugin's database.
requires = ("store",)


#: The events this plugin emits.
EVENTS = (
    EventSpec("persistence.spooled",
              "Records went to the spool file because the database was unusable.",
              fields=("records",), level="WARNING",
              metrics=(EventMetric("persistence_spooled_records",
                                   "Records written to the spool file while the database "
                                   "was unusable.", amount="records"),)),
    EventSpec("persistence.replayed", "Spooled records were replayed into the database.",
              fields=("records",),
              metrics=(EventMetric("persistence_replayed_records",
                                   "Spooled records replayed into the database.",
                                   amount="records"),)),
    # Failures are counted by this plugin's own gauge.
    EventSpec("persistence.write_failed", "A write to the database failed.",
              fields=("error",), level="WARNING"),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Queue, spool, content and retention settings."""
    return declared()


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``conversations show`` and ``usage``."""
    commands.register(subparsers)


@hookimpl
def startup(app: web.Application) -> Any:
    """Open the spool (replaying what an earlier process left) and start the writers."""

    async def start() -> None:
        options = Options.from_settings(app[SETTINGS])
        db = app[DATABASE]

        def report(name: str, **fields: Any) -> None:
            emit(app, name, **fields)

        pipeline = WriteBehind(db, Spool(options.spool_dir), options, report)
        await pipeline.start()
        purger = None
        if options.retention_days > 0:
            purger = RetentionPurger(db, options.retention_days, options.retention_interval)
            purger.start()
        app[PERSISTENCE] = Persistence(options, pipeline, purger)

    return start()


@hookimpl
def shutdown(app: web.Application) -> Any:
    """Flush to the database within the shutdown budget; the rest stays in the spool."""
    state = app.get(PERSISTENCE)
    if state is None:
        return None

    async def stop() -> None:
        if state.purger is not None:
            await state.purger.stop()
        await state.pipeline.stop()

    return stop()


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Refuse requests that would be recorded while the spool is full (policy ``reject``)."""
    state = ctx.app.get(PERSISTENCE)
    if state is None or state.options.spool_full_policy != "reject":
        return
    if not state.pipeline.spool_full():
        return
    if base_operation(ctx.operation_name) not in RECORDED_OPERATIONS:
        return
    raise SidecarError(
        503, "The sidecar cannot record this request right now (its database is unreachable "
        "and its spool is full); try again later.", type="service_unavailable",
        code="persistence_unavailable",
        headers={"Retry-After": str(state.options.retry_after)})


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Turn the ended request into records and queue them: they are in the spool file
    when this returns, before the answer leaves. Requests the sidecar refused or failed
    itself reached nothing upstream worth recording."""
    state = ctx.app.get(PERSISTENCE)
    if state is None or ctx.outcome is Outcome.ERROR:
        return
    operation = ctx.operation_name
    if operation in MODEL_CALLS and not state.options.chat_content:
        # The common case, a model call whose answer names its model: its usage record
        # straight from the context.
        response = ctx.response_json
        model = response.get("model") if type(response) is dict else None
        if type(model) is str and model:
            state.pipeline.enqueue((usage_from_context(ctx, state.new_id(), model),))
            return
    if base_operation(operation) not in RECORDED_OPERATIONS:
        return
    state.pipeline.enqueue(records_for(exchange_from(ctx, state.new_id()),
                                       chat_content=state.options.chat_content))


def usage_from_context(ctx: RequestContext, record_id: str, model: str) -> Record:
    """The usage record of a model call (``MODEL_CALLS``) whose response names ``model``:
    what :func:`records_for` makes of it, without building an :class:`Exchange`."""
    owner, status, started_at, latency_ms, usage = _facts(ctx)
    return usage_record(record_id, ctx.request_id, owner, ctx.operation_name, model, None,
                        None, status, ctx.is_stream, usage, latency_ms, started_at, None,
                        *_billing(ctx))


def exchange_from(ctx: RequestContext, record_id: str) -> Exchange:
    """What capture needs from the request context (the request body is parsed lazily)."""
    owner, status, started_at, latency_ms, usage = _facts(ctx)
    # Positional: this runs for every recorded request.
    return Exchange(ctx.operation_name, record_id, ctx.request_id, owner, status, ctx.is_stream,
                    started_at, latency_ms, ctx.path_params, lambda: ctx.json,
                    ctx.response_json, usage, *_billing(ctx))


def _billing(ctx: RequestContext
             ) -> tuple[str | None, str | None, int | None, str | None, bool]:
    """The caller's key id and organisation, the request's cost in billionths of its
    currency and that currency, as a pricing plugin earlier in the chain set them on
    ``ctx.usage`` (``None`` where unknown), and whether its usage is an estimate."""
    identity = ctx.identity
    usage = ctx.usage
    cost, currency = (None, None) if usage is None else (usage.cost, usage.currency)
    return (None if identity is None else identity.key_id,
            None if identity is None else identity.org,
            cost_nanos(cost), None if cost is None else currency,
            usage is not None and usage.estimated)


def _facts(ctx: RequestContext
           ) -> tuple[str, int, float, float | None, tuple[int, int, int] | None]:
    """Owner, status, wall-clock start, latency in milliseconds and token usage, as records
    give them."""
    timing = ctx.timing
    finished = timing.finished
    usage = ctx.usage
    identity = ctx.identity
    return (identity.owner if identity is not None else "anonymous",
            ctx.response_status or 0,
            # The wall-clock time of the monotonic start.
            time.time() - (time.perf_counter() - timing.started),
            None if finished is None else (finished - timing.started) * 1000,
            None if usage is None else (usage.prompt_tokens, usage.completion_tokens,
                                        usage.total_tokens))


@hookimpl
def readiness(app: web.Application) -> dict[str, Any] | None:
    """Queue and spool figures; unready only while requests are being refused."""
    state = app.get(PERSISTENCE)
    if state is None:
        return None
    stats = state.pipeline.stats()
    full = state.pipeline.spool_full()
    refusing = full and state.options.spool_full_policy == "reject"
    return {"persistence": {"ok": not refusing, "spool_full": full, **stats}}


@hookimpl
def gauges(app: web.Application) -> list[tuple[str, dict[str, str], float]] | None:
    """persistence_queue_depth, _spool_bytes, _lag_seconds, _write_failures_total and more."""
    state = app.get(PERSISTENCE)
    if state is None:
        return None
    s = state.pipeline.stats()
    return [
        ("persistence_queue_depth", {}, float(s["queue_depth"])),
        ("persistence_memory_records", {}, float(s["memory_records"])),
        ("persistence_spool_bytes", {}, float(s["spool_bytes"])),
        ("persistence_lag_seconds", {}, float(s["lag_seconds"])),
        ("persistence_database_writable", {}, 1.0 if s["database_writable"] else 0.0),
        ("persistence_write_failures_total", {}, float(s["write_failures_total"])),
        ("persistence_dropped_records_total", {}, float(s["dropped_records_total"])),
        ("persistence_rejected_records_total", {}, float(s["rejected_records_total"])),
    ]
