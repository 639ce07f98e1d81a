"""The logs plugin: JSON log lines, one access line per request, plugin events, no secrets.

At start-up the plugin replaces the console handlers of the root logger (those the CLI set up
with ``logging.basicConfig``) with a :class:`logging.handlers.QueueHandler`; a
:class:`logging.handlers.QueueListener` thread writes what it queues to standard output and,
when ``SIDECAR_LOG_FILE`` is set, a rotating file (10 MB x 10 by default), formatted with
python-json-logger (see :mod:`plugins.logs.output`). Other handlers (files, capture) are left
alone. Shutdown writes what is queued and puts the console handlers and the level back.

Every line is one JSON object with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
``message``. Lines logged while a request is being handled (by any module) carry its
``request_id`` and, with the tracing plugin, its ``trace_id``.

- ``mistral_sidecar.access``: one line per request (from ``on_end``): who called, what,
  the outcome, tokens, timing, bytes, and every field plugins put in ``ctx.log``. Written
  whatever ``LOG_LEVEL`` says, unless ``SIDECAR_LOG_ACCESS=false``.
- ``mistral_sidecar.event``: one line per plugin event (``proxy.events.emit``).

Message content (request and response bodies) is logged only with ``SIDECAR_LOG_CONTENT=true``.
Secrets never: a filter on every handler of the root logger (the plugin's own and any other
present at start-up) redacts the values of all secret settings (upstream keys, database and
Redis passwords, the ops token ...), sidecar caller keys (``sk-sidecar-...``), bearer tokens and
passwords in URLs from every record, whichever logger wrote it (aiohttp's included), exception
tracebacks included (see :mod:`plugins.logs.redaction`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext
from proxy.events import declaration, event_level
from proxy.settings import Setting, Settings

from .fields import access_fields, event_fields
from .output import JsonOutput, RequestContextFilter
from .redaction import SecretRedactor, secret_values

__all__ = [
    "ACCESS_LOGGER",
    "EVENT_LOGGER",
    "LOGS",
    "LogsState",
    "RequestContextFilter",
    "SecretRedactor",
    "access_fields",
    "secret_values",
]

logger = logging.getLogger("mistral_sidecar.logs")
ACCESS_LOGGER = logging.getLogger("mistral_sidecar.access")
EVENT_LOGGER = logging.getLogger("mistral_sidecar.event")



@dataclass
class LogsState:
    """The JSON output this plugin installed and what access lines contain."""

    output: JsonOutput
    access: bool
    content: bool
    content_max_bytes: int
    previous_access_level: int
    #: By event name, the highest level its lines can have (:attr:`EventSpec.loudest_level`).
    loudest: dict[str, int] = field(default_factory=dict)

    def flush(self) -> None:
        """Wait until every line logged so far is written."""
        self.output.flush()


LOGS = web.AppKey("logs_state", LogsState)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Log destinations and what access lines contain (LOG_LEVEL is the core's)."""
    return [
        Setting("log.stdout", "bool", True, "Write JSON log lines to standard output."),
        Setting("log.file", "str", "", "Also write JSON log lines to this file, rotated by "
                "size (empty: no file)."),
        Setting("log.file_max_bytes", "int", 10 * 1024 * 1024,
                "Size at which the log file is rotated.",
                minimum=1024),
        Setting("log.file_backup_count", "int", 10, "Rotated log files kept.", minimum=0),
        Setting("log.access", "bool", True, "Write one access line per request (whatever "
                "LOG_LEVEL says).", deprecated_env=("SIDECAR_ACCESS_LOG",)),
        Setting("log.access_flush_seconds", "float", 0.1,
                "Log lines (access lines included) are written by a background thread in "
                "batches, at most this long after they were logged; 0 wakes it for every "
                "line (much more CPU under load).",
                deprecated_env=("SIDECAR_ACCESS_LOG_FLUSH_SECONDS",), minimum=0),
        Setting("log.content", "bool", False, "Include request and response bodies (message "
                "content) in access lines."),
        Setting("log.content_max_bytes", "int", 64 * 1024, "With SIDECAR_LOG_CONTENT: bodies "
                "larger than this are logged as truncated text.", minimum=0),
    ]


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """Message content in log lines is refused in production."""
    if settings.serving and settings["environment"] == "production" and settings["log.content"]:
        return ["SIDECAR_LOG_CONTENT: logging message content is refused when "
                "ENVIRONMENT=production"]
    return []


@hookimpl
def startup(app: web.Application) -> None:
    """Replace the root logger's console handlers with the JSON output."""
    settings = app[SETTINGS]
    output = JsonOutput.install(settings, SecretRedactor(secret_values(settings)))
    state = LogsState(output=output, access=bool(settings["log.access"]),
                      content=bool(settings["log.content"]),
                      content_max_bytes=int(settings["log.content_max_bytes"]),
                      previous_access_level=ACCESS_LOGGER.level)
    if state.access:
        ACCESS_LOGGER.setLevel(logging.INFO)
    app[LOGS] = state


@hookimpl
def shutdown(app: web.Application) -> None:
    """Write what is queued; put the replaced handlers and the previous levels back."""
    state = app.get(LOGS)
    if state is None:
        return
    state.output.uninstall()
    ACCESS_LOGGER.setLevel(state.previous_access_level)


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """The access line of the request, with how it ended and the error code, if any (a
    warning when the answer is a 5xx)."""
    state = ctx.app[LOGS]
    if not state.access:
        return
    if ctx.outcome is not None:
        ctx.log["outcome"] = ctx.outcome.value
    if ctx.error is not None:
        ctx.log["error_code"] = ctx.error.code
    status = ctx.response_status
    level = logging.WARNING if status is not None and status >= 500 else logging.INFO
    if ACCESS_LOGGER.isEnabledFor(level):
        ACCESS_LOGGER.log(level, access_fields(ctx, state.content, state.content_max_bytes))


@hookimpl
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """One line per plugin event, at the level its declaration gives."""
    # Most events reported on every request are DEBUG: at INFO, one lookup says so.
    state = app.get(LOGS)
    loudest = state.loudest.get(name) if state is not None else None
    if loudest is None:
        loudest = declaration(app, name).loudest_level
        if state is not None:
            state.loudest[name] = loudest
    if not EVENT_LOGGER.isEnabledFor(loudest):
        return
    level = event_level(app, name, fields)
    if EVENT_LOGGER.isEnabledFor(level):
        EVENT_LOGGER.log(level, event_fields(ctx, name, fields))
