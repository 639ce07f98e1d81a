"""The logs plugin: JSON log lines, one access line per request, plugin events, no secrets.

At start-up the plugin replaces the console handlers of the root logger (those the CLI set up
with ``logging.basicConfig``) with a JSON handler on stdout and, when ``SIDECAR_LOG_FILE`` is
set, a rotating file (10 MB x 10 by default), formatted with python-json-logger the way the
deployment guide's ``LOGGING_CONFIG`` does. Other handlers (files, capture) are left alone.
Shutdown puts the console handlers and the level back.

Every line is one JSON object with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
``message``. Lines logged while a request is being handled (by any module) carry its
``request_id`` and, with the tracing plugin, its ``trace_id``.

- ``mistral_sidecar.access``: one line per request (from ``on_complete`` or ``on_error``,
  never both): who called, what, the outcome, tokens, timing, bytes, and every field plugins
  put in ``ctx.log``. Written whatever ``LOG_LEVEL`` says, unless ``SIDECAR_ACCESS_LOG=false``.
- ``mistral_sidecar.event``: one line per plugin event (``proxy.events.emit``).

Message content (request and response bodies) is logged only with ``SIDECAR_LOG_CONTENT=true``.
Secrets never: a filter on every handler redacts the values of all secret settings (upstream
keys, database and Redis passwords), bearer tokens and passwords in URLs from every record.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext
from proxy.errors import SidecarError
from proxy.settings import Setting, Settings

__all__ = [
    "ACCESS_LOGGER",
    "CURRENT_REQUEST",
    "EVENT_LOGGER",
    "LOGS",
    "LogsState",
    "RequestContextFilter",
    "SecretRedactor",
    "SidecarJsonFormatter",
    "access_fields",
    "secret_values",
]

ACCESS_LOGGER = logging.getLogger("mistral_sidecar.access")
EVENT_LOGGER = logging.getLogger("mistral_sidecar.event")

CURRENT_REQUEST: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "mistral_sidecar_request", default=None)
"""The request being handled by the current task (for ``request_id`` on every line)."""

REDACTED = "[REDACTED]"
_STATE_DONE = "logs.done"
#: Record attributes this module sets for its own bookkeeping; never written out.
_PRIVATE = ("_sidecar_filtered", "_sidecar_json")
_STANDARD_ATTRS = frozenset(logging.LogRecord(
    "x", logging.INFO, "x", 0, "x", None, None).__dict__) | {"message", "asctime", *_PRIVATE}

#: Events worth a warning; the rest are informational (rate-limit passes only at DEBUG).
_WARNING_EVENTS = frozenset({"persistence.write_failed", "persistence.spooled",
                             "guard.detection", "concurrency.rejected", "keypool.cooldown"})


# --- formatting ------------------------------------------------------------------------------


class SidecarJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with UTC ISO 8601 times and one format per record.

    A record that goes to both stdout and the file is serialised once.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "taskName", *_PRIVATE],
        )

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``2025-01-31T12:00:00.123Z`` (UTC, milliseconds)."""
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            # One tuple, swapped at once: threads logging concurrently never mix two seconds.
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                           time.gmtime(second)))
        return f"{cached[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line (memoised on the record)."""
        cached = record.__dict__.get("_sidecar_json")
        if cached is not None and cached[0] is self:
            text: str = cached[1]
            return text
        text = super().format(record)
        record.__dict__["_sidecar_json"] = (self, text)
        return text


class RotatingJsonFile(logging.handlers.RotatingFileHandler):
    """A rotating file that counts what it wrote instead of asking the file system.

    The standard handler stats the file and formats each record twice to decide on rollover;
    the lines here are ASCII (JSON with ``ensure_ascii``), so characters are bytes.
    """

    def __init__(self, filename: str, max_bytes: int, backup_count: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count,
                         encoding="utf-8")
        self._size = self._current_size()

    def _current_size(self) -> int:
        try:
            return os.path.getsize(self.baseFilename)
        except OSError:
            return 0

    def doRollover(self) -> None:
        """Rotate, then start counting again."""
        super().doRollover()
        self._size = self._current_size()

    def emit(self, record: logging.LogRecord) -> None:
        """Write one line, rotating first when it would not fit."""
        try:
            line = self.format(record) + self.terminator
            if self.maxBytes > 0 and self._size and self._size + len(line) > self.maxBytes:
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(line)
            self.stream.flush()
            self._size += len(line)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


# --- filters ---------------------------------------------------------------------------------


class RequestContextFilter(logging.Filter):
    """Adds the current request's ``request_id`` (and ``trace_id``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate; never drops a record."""
        ctx = CURRENT_REQUEST.get()
        # Tasks started during a request inherit its context; once the request is logged as
        # finished, their lines are no longer its lines.
        if ctx is not None and _STATE_DONE not in ctx.state:
            attrs = record.__dict__
            if "request_id" not in attrs:
                attrs["request_id"] = ctx.request_id
            if "trace_id" not in attrs:
                trace_id = ctx.log.get("trace_id")
                if trace_id:
                    attrs["trace_id"] = trace_id
        return True


def secret_values(settings: Settings) -> list[str]:
    """The values of every setting declared secret (each key of a list separately)."""
    found: list[str] = []
    for name, setting in settings.declared.items():
        if not setting.secret:
            continue
        value = settings.get(name)
        items = value if isinstance(value, list | tuple) else [value]
        found.extend(str(item) for item in items if item not in (None, ""))
    return found


class SecretRedactor(logging.Filter):
    """Removes secrets from a record before any handler formats it.

    Redacts the given literal values (four characters or more), bearer tokens and the password
    in ``scheme://user:password@host``, in the message, its arguments, extra fields (nested
    ones included) and exception text. Defence in depth: nothing should log them anyway.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        literals = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        parts = [f"(?P<lit>{'|'.join(re.escape(s) for s in literals)})"] if literals else []
        parts.append(r"(?P<bearer>(?i:bearer)\s+)[A-Za-z0-9._~+/-]{8,}=*")
        parts.append(r"(?P<url>://[^:/@\s\"']*:)[^@/\s\"']+@")
        self.pattern = re.compile("|".join(parts))

    def _replace(self, match: re.Match[str]) -> str:
        if match.group("bearer") is not None:
            return match.group("bearer") + REDACTED
        if match.group("url") is not None:
            return match.group("url") + REDACTED + "@"
        return REDACTED

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        return self.pattern.sub(self._replace, text)

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value) if self.pattern.search(value) else value
        if isinstance(value, dict):
            return {k: self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(v) for v in value]
        return value

    def _needs_redaction(self, values: Iterable[Any]) -> bool:
        texts: list[str] = []
        for value in values:
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, dict | list | tuple):
                return True
        return bool(texts) and self.pattern.search("\x00".join(texts)) is not None

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        attrs = record.__dict__
        if "_sidecar_filtered" in attrs:
            return True
        attrs["_sidecar_filtered"] = True
        msg = record.msg
        if isinstance(msg, dict):
            if self._needs_redaction(msg.values()):
                record.msg = {k: self._redact_value(v) for k, v in msg.items()}
        else:
            text = record.getMessage() if record.args else str(msg)
            if self.pattern.search(text):
                text = self.redact(text)
            record.msg, record.args = text, None
        extras = [key for key in attrs if key not in _STANDARD_ATTRS]
        if extras and self._needs_redaction(attrs[key] for key in extras):
            for key in extras:
                attrs[key] = self._redact_value(attrs[key])
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            # Formatters re-render exc_info if present; keep only the redacted text.
            record.exc_info = None
        if record.exc_text and self.pattern.search(record.exc_text):
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info and self.pattern.search(record.stack_info):
            record.stack_info = self.redact(record.stack_info)
        return True


# --- configuration and lifecycle -------------------------------------------------------------


@dataclass
class LogsState:
    """What this plugin installed, what it replaced, and its per-request switches."""

    access: bool
    content: bool
    content_max_bytes: int
    handlers: list[logging.Handler] = field(default_factory=list)
    replaced: list[logging.Handler] = field(default_factory=list)
    previous_level: int = logging.WARNING
    previous_access_level: int = logging.NOTSET


LOGS = web.AppKey("logs_state", LogsState)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Log destinations and what access lines contain (LOG_LEVEL is the core's)."""
    return [
        Setting("log.stdout", "bool", True, "Write JSON log lines to standard output.",
                env="SIDECAR_LOG_STDOUT"),
        Setting("log.file", "str", "", "Also write JSON log lines to this file, rotated by "
                "size (empty: no file).", env="SIDECAR_LOG_FILE"),
        Setting("log.file_max_bytes", "int", 10 * 1024 * 1024,
                "Size at which the log file is rotated.", env="SIDECAR_LOG_FILE_MAX_BYTES",
                minimum=1024),
        Setting("log.file_backup_count", "int", 10, "Rotated log files kept.",
                env="SIDECAR_LOG_FILE_BACKUP_COUNT", minimum=0),
        Setting("log.access", "bool", True, "Write one access line per request (whatever "
                "LOG_LEVEL says).", env="SIDECAR_ACCESS_LOG"),
        Setting("log.content", "bool", False, "Include request and response bodies (message "
                "content) in access lines.", env="SIDECAR_LOG_CONTENT"),
        Setting("log.content_max_bytes", "int", 64 * 1024, "With SIDECAR_LOG_CONTENT: bodies "
                "larger than this are logged as truncated text.",
                env="SIDECAR_LOG_CONTENT_MAX_BYTES", minimum=0),
    ]


def _is_console(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return (type(handler) is logging.StreamHandler
            and stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))


def build_handlers(settings: Settings) -> list[logging.Handler]:
    """The JSON handlers the settings ask for, with the request-id and redaction filters."""
    formatter = SidecarJsonFormatter()
    redactor = SecretRedactor(secret_values(settings))
    context = RequestContextFilter()
    handlers: list[logging.Handler] = []
    if settings["log.stdout"]:
        handlers.append(logging.StreamHandler(sys.stdout))
    if settings["log.file"]:
        path = str(settings["log.file"])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handlers.append(RotatingJsonFile(path, int(settings["log.file_max_bytes"]),
                                         int(settings["log.file_backup_count"])))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(context)
        handler.addFilter(redactor)
    return handlers


@hookimpl
def startup(app: web.Application) -> None:
    """Replace the root logger's console handlers with the JSON ones."""
    settings = app[SETTINGS]
    state = LogsState(access=bool(settings["log.access"]), content=bool(settings["log.content"]),
                      content_max_bytes=int(settings["log.content_max_bytes"]))
    root = logging.getLogger()
    state.previous_level = root.level
    state.previous_access_level = ACCESS_LOGGER.level
    state.replaced = [h for h in root.handlers if _is_console(h)]
    state.handlers = build_handlers(settings)
    for handler in state.replaced:
        root.removeHandler(handler)
    for handler in state.handlers:
        root.addHandler(handler)
    root.setLevel(getattr(logging, str(settings["log.level"]), logging.INFO))
    if state.access:
        ACCESS_LOGGER.setLevel(logging.INFO)
    app[LOGS] = state


@hookimpl
def shutdown(app: web.Application) -> None:
    """Put the replaced handlers and the previous levels back."""
    state = app.get(LOGS)
    if state is None:
        return
    root = logging.getLogger()
    for handler in state.handlers:
        root.removeHandler(handler)
        handler.close()
    for handler in state.replaced:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(state.previous_level)
    ACCESS_LOGGER.setLevel(state.previous_access_level)
    state.handlers = []


# --- requests --------------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def access_fields(ctx: RequestContext, content: bool = False,
                  content_max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """The fields of the access line for ``ctx`` (``None`` values left out)."""
    status = ctx.response_status
    fields: dict[str, Any] = {
        "message": f"{ctx.method} {ctx.path} {status if status is not None else '-'}",
        "request_id": ctx.request_id,
        "method": ctx.method,
        "path": ctx.path,
        "operation": ctx.operation_name,
    }
    if ctx.is_stream:
        fields["stream"] = True
    identity = ctx.identity
    if identity is not None:
        fields["owner"] = identity.owner
        fields["role"] = identity.role
        fields["key_id"] = identity.key_id
        if identity.org != "default":
            fields["org"] = identity.org
    # Path first, then the response (already parsed for usage); the request body is parsed
    # only when they do not name the model (conversations, errors).
    params = ctx.path_params
    agent_id = params.get("agent_id")
    conversation_id = params.get("conversation_id")
    model = None
    body = ctx.response_json if status is not None and status < 400 else None
    if not isinstance(body, dict):
        body = None
    if body is not None:
        model = body.get("model")
        if agent_id is None:
            agent_id = body.get("agent_id") or (
                body.get("id") if ctx.operation_name == "agents.create" else None)
        if conversation_id is None:
            conversation_id = body.get("conversation_id")
    if not model:
        ids = ctx.resource_ids
        model = ids.get("model")
        agent_id = agent_id or ids.get("agent_id")
    if agent_id:
        fields["agent_id"] = agent_id
    if conversation_id:
        fields["conversation_id"] = conversation_id
    if model:
        fields["model"] = model
    fields["status"] = status
    if ctx.upstream_status is not None:
        fields["upstream_status"] = ctx.upstream_status
    fields["attempts"] = ctx.attempts
    usage = ctx.usage if body is not None else None
    if usage is not None:
        fields["prompt_tokens"] = usage.prompt_tokens
        fields["completion_tokens"] = usage.completion_tokens
        fields["total_tokens"] = usage.total_tokens
    timing = ctx.timing
    finished = timing.finished if timing.finished is not None else time.perf_counter()
    fields["duration_ms"] = _ms(finished - timing.started)
    if timing.upstream_started is not None:
        fields["upstream_ms"] = _ms(finished - timing.upstream_started)
    if timing.first_byte_sent is not None:
        fields["ttfb_ms"] = _ms(timing.first_byte_sent - timing.started)
    fields["bytes"] = ctx.response_bytes
    if ctx.body is not None:
        fields["request_bytes"] = len(ctx.body)
    for key, value in ctx.log.items():
        if key not in fields and value is not None:
            fields[key] = value
    if content:
        _add_content(fields, ctx, content_max_bytes)
    return fields


def _add_content(fields: dict[str, Any], ctx: RequestContext, limit: int) -> None:
    if ctx.body is not None:
        if len(ctx.body) <= limit and ctx.json is not None:
            fields["request_body"] = ctx.json
        else:
            fields["request_body_truncated"] = ctx.body[:limit].decode("utf-8", "replace")
    response = ctx.response_json
    if response is not None:
        if ctx.response_bytes <= limit:
            fields["response_body"] = response
        else:
            fields["response_body_truncated"] = str(response)[:limit]


def _write_access(ctx: RequestContext) -> None:
    state = ctx.state
    if _STATE_DONE in state:
        return
    state[_STATE_DONE] = True
    logs = ctx.app[LOGS]
    if logs.access:
        fields = access_fields(ctx, logs.content, logs.content_max_bytes)
        status = ctx.response_status
        ACCESS_LOGGER.log(logging.WARNING if status is not None and status >= 500
                          else logging.INFO, fields)
    if CURRENT_REQUEST.get() is ctx:
        CURRENT_REQUEST.set(None)


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """From here on, every line logged by this task carries the request id."""
    CURRENT_REQUEST.set(ctx)


@hookimpl
def on_complete(ctx: RequestContext) -> None:
    """The access line of a finished request."""
    _write_access(ctx)


@hookimpl
def on_error(ctx: RequestContext, error: SidecarError) -> None:
    """The access line of a request the sidecar answered with an error.

    A stream that broke after it started is also reported to ``on_complete`` right after;
    its line is written there, when its timing and byte count are final.
    """
    if ctx.log.get("outcome") == "upstream_broken":
        ctx.log.setdefault("error_code", error.code)
        return
    _write_access(ctx)


@hookimpl
def on_event(app: web.Application, ctx: RequestContext | None, name: str,
             fields: dict[str, Any]) -> None:
    """One line per plugin event."""
    if name == "ratelimit.decision" and fields.get("allowed"):
        level = logging.DEBUG
    elif name in _WARNING_EVENTS or (
            name == "breaker.transition" and fields.get("to_state") in ("open", "forced_open")
    ) or (name == "ratelimit.fallback" and fields.get("active")):
        level = logging.WARNING
    else:
        level = logging.INFO
    if not EVENT_LOGGER.isEnabledFor(level):
        return
    line: dict[str, Any] = dict(fields)
    line["message"] = name
    line["event"] = name
    if ctx is not None:
        line["request_id"] = ctx.request_id
        line["operation"] = ctx.operation_name
    EVENT_LOGGER.log(level, line)
