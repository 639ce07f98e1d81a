"""The logs plugin: JSON log lines, one access line per request, plugin events, no secrets.

At start-up the plugin replaces the console handlers of the root logger (those the CLI set up
with ``logging.basicConfig``) with a JSON handler on stdout and, when ``SIDECAR_LOG_FILE`` is
set, a rotating file (10 MB x 10 by default), formatted with python-json-logger the way the
deployment guide's ``LOGGING_CONFIG`` does. Other handlers (files, capture) are left alone.
Shutdown puts the console handlers and the level back.

Every line is one JSON object with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
``message``. Lines logged while a request is being handled (by any module) carry its
``request_id`` and, with the tracing plugin, its ``trace_id``.

- ``mistral_sidecar.access``: one line per request (from ``on_end``): who called, what,
  the outcome, tokens, timing, bytes, and every field plugins put in ``ctx.log``. Written
  whatever ``LOG_LEVEL`` says, unless ``SIDECAR_ACCESS_LOG=false``.
- ``mistral_sidecar.event``: one line per plugin event (``proxy.events.emit``).

Message content (request and response bodies) is logged only with ``SIDECAR_LOG_CONTENT=true``.
Secrets never: a filter on every handler of the root logger (the plugin's own and any other
present at start-up) redacts the values of all secret settings (upstream keys, database and
Redis passwords, the ops token ...), sidecar caller keys (``sk-sidecar-...``), bearer tokens and
passwords in URLs from every record, whichever logger wrote it (aiohttp's included), exception
tracebacks included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import CURRENT_REQUEST, RequestContext
from proxy.settings import Setting, Settings

from .line import (
    AccessLineEncoder,
    add_request_fields,
    caller_fields,
    request_fields,
    utc_time,
)

__all__ = [
    "ACCESS_LOGGER",
    "CURRENT_REQUEST",
    "EVENT_LOGGER",
    "LOGS",
    "AccessLog",
    "AccessRecord",
    "FieldsRecord",
    "JsonStream",
    "LogsState",
    "RequestContextFilter",
    "SecretRedactor",
    "SidecarJsonFormatter",
    "access_fields",
    "log_fields",
    "secret_values",
]

logger = logging.getLogger("mistral_sidecar.logs")
ACCESS_LOGGER = logging.getLogger("mistral_sidecar.access")
EVENT_LOGGER = logging.getLogger("mistral_sidecar.event")


REDACTED = "[REDACTED]"
#: How every sidecar caller key starts (``sk-sidecar-<key id>-<secret>``, see
#: ``plugins.auth.keys``; spelled out here so logging does not depend on the auth plugin).
CALLER_KEY_PREFIX = "sk-sidecar-"
#: Record attributes this module sets for its own bookkeeping; never written out.
_PRIVATE = ("_sidecar_filtered", "_sidecar_json")
_STANDARD_ATTRS = frozenset(logging.LogRecord(
    "x", logging.INFO, "x", 0, "x", None, None).__dict__) | {"message", "asctime", "taskName",
                                                           *_PRIVATE}

_SCALARS = frozenset({int, float, bool, type(None)})

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
        # One encoder for every fields line: the general path builds one per record.
        self._encoder = JsonEncoder(ensure_ascii=True)
        self._encode = _flat_encoder(self._encoder)
        self.redactor: SecretRedactor | None = None

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``2025-01-31T12:00:00.123Z`` (UTC, milliseconds)."""
        return utc_time(record.created)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line (memoised on the record)."""
        attrs = record.__dict__
        cached = attrs.get("_sidecar_json")
        if cached is not None and cached[0] is self:
            text: str = cached[1]
            return text
        if type(record) is AccessRecord:
            text = self.encode_line(record.msg)  # type: ignore[arg-type]  # always a dict
        elif type(record.msg) is dict:
            text = self._format_fields(record, record.msg)
        else:
            text = super().format(record)
        attrs["_sidecar_json"] = (self, text)
        return text

    def encode_line(self, fields: dict[str, Any]) -> str:
        """A complete line's fields (time, level, logger ...) as JSON, redacted: the
        redaction filter leaves access lines to be checked here, as one string."""
        text = self._encode(fields)
        redactor = self.redactor
        if redactor is not None and redactor.suspicious(text):
            text = redactor.redact(text)
        return text

    def _format_fields(self, record: logging.LogRecord, fields: dict[str, Any]) -> str:
        """A record whose message is already a dict of fields (access and event lines):
        the same JSON as the general path, without its per-field renaming machinery."""
        data: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname,
                                "logger": record.name}
        data.update(fields)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in data:
                data[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter.formatException(self, record.exc_info)
        if record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return self._encoder.encode(data)


def _flat_encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """An encoder for the access lines: compact ASCII JSON, by orjson when the line is plain
    ASCII (nearly always, and several times cheaper), else by ``encoder``'s C core with
    ``\\u`` escapes, so a log line never depends on the output's encoding."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    # The lines are flat dicts, so the circular-reference check is not needed.
    iterencode = make(None, encoder.default, json.encoder.encode_basestring_ascii, None,
                      ":", ",", False, False, True)
    dumps = orjson.dumps

    def encode(obj: Any) -> str:
        try:
            text: str = dumps(obj).decode()
        except TypeError:
            return "".join(iterencode(obj, 0))
        return text if text.isascii() else "".join(iterencode(obj, 0))

    return encode


class JsonStream(logging.StreamHandler):
    """Standard output. While ``hold`` is set (a batch of access lines is being written) lines
    are not flushed one by one; the batch flushes once at its end."""

    hold = False

    def flush(self) -> None:
        """Flush, unless a batch holds it."""
        if not self.hold:
            super().flush()

    def write_bytes(self, data: bytes, count: int) -> None:
        """Write ``count`` encoded lines (each ending with a newline) at once."""
        self.acquire()
        try:
            stream = self.stream
            raw = getattr(stream, "buffer", None)
            if raw is None:
                stream.write(data.decode())
                stream.flush()
            else:
                stream.flush()  # whatever text is buffered goes first
                raw.write(data)
                raw.flush()
        except Exception:
            logger.exception("cannot write %d log lines to %s", count, self.stream)
        finally:
            self.release()


class RotatingJsonFile(logging.handlers.RotatingFileHandler):
    """A rotating file that counts what it wrote instead of asking the file system.

    The standard handler stats the file and formats each record twice to decide on rollover;
    the lines here are ASCII (JSON with ``ensure_ascii``), so characters are bytes. Like
    :class:`JsonStream`, it flushes once per batch while ``hold`` is set.
    """

    hold = False

    def __init__(self, filename: str, max_bytes: int, backup_count: int) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count,
                         encoding="utf-8")
        self._size = self._current_size()

    def flush(self) -> None:
        """Flush, unless a batch holds it."""
        if not self.hold:
            super().flush()

    def _current_size(self) -> int:
        try:
            return os.path.getsize(self.baseFilename)
        except OSError:
            return 0

    def doRollover(self) -> None:
        """Rotate, then start counting again."""
        super().doRollover()
        self._size = self._current_size()

    def write_bytes(self, data: bytes, count: int) -> None:
        """Write ``count`` encoded lines (each ending with a newline) at once, rotating where
        one would not fit."""
        self.acquire()
        try:
            if self.maxBytes > 0 and self._size + len(data) > self.maxBytes:
                self._write_rotating(data)
            else:
                self._write_chunk(data)
        except Exception:
            logger.exception("cannot write %d log lines to %s", count, self.baseFilename)
        finally:
            self.release()

    def _write_rotating(self, data: bytes) -> None:
        chunk: list[bytes] = []
        chunk_size = 0
        for line in data.splitlines(keepends=True):
            if self._size + chunk_size and self._size + chunk_size + len(line) > self.maxBytes:
                self._write_chunk(b"".join(chunk))
                chunk, chunk_size = [], 0
                self.doRollover()
            chunk.append(line)
            chunk_size += len(line)
        self._write_chunk(b"".join(chunk))

    def _write_chunk(self, data: bytes) -> None:
        if not data:
            return
        if self.stream is None:
            self.stream = self._open()
        self.stream.flush()  # whatever text is buffered goes first
        self.stream.buffer.write(data)
        self.stream.buffer.flush()
        self._size += len(data)

    def emit(self, record: logging.LogRecord) -> None:
        """Write one line, rotating first when it would not fit."""
        try:
            line = self.format(record) + self.terminator
            if self.maxBytes > 0 and self._size and self._size + len(line) > self.maxBytes:
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(line)
            self.flush()
            self._size += len(line)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


#: What a :class:`FieldsRecord` says about where it was logged (formatters look these up in
#: the record's ``__dict__``, so they are copied there, in one call).
_RECORD_CONSTANTS: dict[str, Any] = {
    "pathname": __file__, "filename": os.path.basename(__file__), "module": "logs",
    "funcName": "log_fields",
    "lineno": 0, "args": None, "exc_info": None, "exc_text": None, "stack_info": None,
    "thread": None, "threadName": None, "process": None, "processName": None,
    "relativeCreated": 0.0, "taskName": None,
}


class FieldsRecord(logging.LogRecord):
    """A record whose message is a dict of fields, made without the standard record's caller
    lookup and process/thread introspection (they cost more than formatting the line).

    Access and event lines are the only users.
    """

    def __init__(self, name: str, level: int, fields: dict[str, Any],
                 created: float | None = None) -> None:
        # Deliberately not LogRecord.__init__: see the class docstring.
        self.__dict__.update(_RECORD_CONSTANTS)
        self.name = name
        self.msg = fields
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        now = time.time() if created is None else created
        self.created = now
        self.msecs = float(int((now - int(now)) * 1000))


def log_fields(logger: logging.Logger, level: int, fields: dict[str, Any]) -> None:
    """Log ``fields`` as one line through ``logger`` (its level, filters and handlers)."""
    if logger.isEnabledFor(level):
        logger.handle(FieldsRecord(logger.name, level, fields))


class AccessRecord(FieldsRecord):
    """An access line: its fields already start with ``time``, ``level`` and ``logger``, and
    carry ``request_id`` and ``trace_id``; the JSON formatter encodes them as they are and
    checks the encoded line for secrets."""


# --- filters ---------------------------------------------------------------------------------


class RequestContextFilter(logging.Filter):
    """Adds the current request's ``request_id`` (and ``trace_id``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate; never drops a record."""
        if type(record) is AccessRecord:
            return True
        ctx = CURRENT_REQUEST.get()
        # Tasks started during a request inherit its context; once the request is logged as
        # finished, their lines are no longer its lines.
        if ctx is not None and not ctx.ended:
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

    Redacts the given literal values (four characters or more), sidecar caller keys (all but
    their public key id), bearer tokens (also when the whitespace after ``Bearer`` is written
    escaped, as in a ``repr``) and the password in ``scheme://user:password@host``, in the
    message, its arguments, extra fields (nested ones included) and exception text. Defence
    in depth: nothing should log them anyway.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        wanted = {s for s in secrets if len(s) >= 4}
        # Also as they appear inside JSON text (access lines are checked once encoded).
        wanted |= {json.dumps(s)[1:-1] for s in wanted}
        literals = sorted(wanted, key=len, reverse=True)
        self.literals = tuple(literals)
        # In ASCII JSON a secret with other characters appears only in its escaped form.
        self.ascii_literals = tuple(s for s in literals if s.isascii())
        parts = [f"(?P<lit>{'|'.join(re.escape(s) for s in literals)})"] if literals else []
        parts.append(r"(?P<bearer>(?i:bearer)(?:\s|\\[rnt])+)[A-Za-z0-9._~+/-]+=*")
        parts.append(r"(?P<url>://[^:/@\s\"']*:)[^@/\s\"']+@")
        parts.append(r"(?P<key>" + re.escape(CALLER_KEY_PREFIX) + r"(?:[0-9a-f]{16}-)?)"
                     r"[A-Za-z0-9_-]+")
        self.pattern = re.compile("|".join(parts))

    def _replace(self, match: re.Match[str]) -> str:
        if match.group("bearer") is not None:
            return match.group("bearer") + REDACTED
        if match.group("url") is not None:
            return match.group("url") + REDACTED + "@"
        if match.group("key") is not None:
            return match.group("key") + REDACTED
        return REDACTED

    def suspicious(self, text: str) -> bool:
        """Whether ``text`` may hold a secret: a quick test (substring searches run in C) that
        spares the full pattern, several times slower, on the lines that have none."""
        for literal in self.literals:
            if literal in text:
                return True
        if "@" in text and "://" in text:
            return True
        return CALLER_KEY_PREFIX in text or "bearer" in text.lower()

    def suspicious_json(self, text: str) -> bool:
        """:meth:`suspicious` for compact ASCII JSON (as orjson writes it), cheaper: there the
        only whitespace left unescaped is the space, so a bearer token (``bearer`` then
        whitespace, or an escaped one) needs a space or a backslash, and only then is the text
        lowered and searched."""
        for literal in self.ascii_literals:
            if literal in text:
                return True
        if "@" in text and "://" in text:
            return True
        if CALLER_KEY_PREFIX in text:
            return True
        return (" " in text or "\\" in text) and "bearer" in text.lower()

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        return self.pattern.sub(self._replace, text)

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value) if self.suspicious(value) else value
        if isinstance(value, dict):
            return {k: self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(v) for v in value]
        return value

    def _needs_redaction(self, values: Iterable[Any]) -> bool:
        texts: list[str] = []
        for value in values:
            kind = type(value)
            if kind is str:
                texts.append(value)
            elif kind in _SCALARS:
                continue
            elif isinstance(value, str):
                texts.append(value)
            elif isinstance(value, (dict, list, tuple)):
                return True
        return bool(texts) and self.suspicious("\x00".join(texts))

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if type(record) is AccessRecord:
            return True  # checked by the formatter, encoded, in one pass
        attrs = record.__dict__
        # Several sidecars in one process (tests) have redactors with different secrets: a
        # record one of them checked must still be checked by the others.
        if attrs.get("_sidecar_filtered") is self:
            return True
        attrs["_sidecar_filtered"] = self
        msg = record.msg
        if isinstance(msg, dict):
            if self._needs_redaction(msg.values()):
                record.msg = {k: self._redact_value(v) for k, v in msg.items()}
        else:
            text = record.getMessage() if record.args else str(msg)
            if self.suspicious(text):
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
        if record.exc_text and self.suspicious(record.exc_text):
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info and self.suspicious(record.stack_info):
            record.stack_info = self.redact(record.stack_info)
        return True


# --- configuration and lifecycle -------------------------------------------------------------


#: A batch is written early once it holds this many lines or bytes.
BATCH_MAX_LINES = 1024
BATCH_MAX_BYTES = 4 * 1024 * 1024


class AccessLog:
    """Access lines of finished requests, encoded at once and written in batches.

    ``add`` encodes the finished request's line straight away (nothing of the request is
    kept afterwards: holding requests until a later write would keep their object graphs
    alive for the garbage collector to walk) and queues it; the queue is written with one
    write per handler at most ``interval`` seconds later (0.1 by default: a line is out
    before anyone watching the log notices, and a batch holds every line of that time), at
    shutdown, or when it grows large. With ``interval`` 0 it is written as soon as the event
    loop is done with the requests that finished in the same round: the line is out before
    its caller can act on the response, at the price of a write (and its bookkeeping) per
    round.

    A line is queued as bytes when the fast encoder could make it (nearly always), else as
    its fields; whichever way, it is written as the same JSON object.
    """

    def __init__(self, *, interval: float, content: bool, content_max_bytes: int,
                 handlers: list[logging.Handler]) -> None:
        self.interval = interval
        self.content = content
        self.content_max_bytes = content_max_bytes
        self.handlers = handlers
        self.pending: list[tuple[int, float, bytes | dict[str, Any]]] = []
        self.pending_bytes = 0
        self.timer: asyncio.Handle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._all_json = all(isinstance(h, JsonStream | RotatingJsonFile) for h in handlers)
        redactor = next((h.formatter.redactor for h in handlers
                         if isinstance(h.formatter, SidecarJsonFormatter)
                         and h.formatter.redactor is not None), None)
        self.encoder = AccessLineEncoder(
            ACCESS_LOGGER.name,
            redactor.suspicious_json if redactor is not None else lambda encoded: False)

    def add(self, ctx: RequestContext) -> None:
        """Encode and queue the line of a finished request."""
        ended = time.time()
        status = ctx.response_status
        warning = status is not None and status >= 500
        level = logging.WARNING if warning else logging.INFO
        if not ACCESS_LOGGER.isEnabledFor(level):
            return
        line: bytes | dict[str, Any] | None = None
        try:
            if not self.content:
                line = self.encoder.encode(ctx, ended, warning)
            if line is None:
                line = self._fields(ctx, ended, level)
                self.pending_bytes += len(ctx.response_body or b"") + len(ctx.body or b"")
            else:
                self.pending_bytes += len(line)
        except Exception:
            logger.exception("cannot make the access line of request %s", ctx.request_id)
            return
        pending = self.pending
        pending.append((level, ended, line))
        full = len(pending) >= BATCH_MAX_LINES or self.pending_bytes >= BATCH_MAX_BYTES
        if self.timer is not None and not full:
            return  # the usual case: a batch is being gathered
        if full or self.closed or self.loop is None:
            self.flush()
        else:  # the first line of a batch
            self.timer = (self.loop.call_later(self.interval, self._timer_fired)
                          if self.interval > 0 else self.loop.call_soon(self._timer_fired))

    def _timer_fired(self) -> None:
        self.timer = None  # it has run: nothing to cancel
        self.flush()

    def flush(self) -> None:
        """Write every queued line now."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        if not batch:
            return
        direct = self._direct_handlers()
        if direct is not None:
            self._write_direct(batch, direct)
            return
        held = [h for h in self.handlers if isinstance(h, JsonStream | RotatingJsonFile)]
        for handler in held:
            handler.hold = True
        try:
            for level, ended, line in batch:
                try:
                    fields: dict[str, Any] = (orjson.loads(line) if isinstance(line, bytes)
                                              else line)
                    ACCESS_LOGGER.handle(AccessRecord(ACCESS_LOGGER.name, level, fields, ended))
                except Exception:
                    logger.exception("cannot write an access line")
        finally:
            for handler in held:
                handler.hold = False
                _flush_quietly(handler)

    def _direct_handlers(self) -> list[JsonStream | RotatingJsonFile] | None:
        """This plugin's handlers, when they are the only ones access lines would reach (the
        usual case in production); ``None`` when anything else is configured."""
        if not self._all_json:
            return None
        node = ACCESS_LOGGER
        while node.parent is not None:
            if node.handlers or node.filters or node.disabled or not node.propagate:
                return None
            node = node.parent
        # ``node`` is the root logger now.
        if node.filters or node.handlers != self.handlers:
            return None
        for handler in self.handlers:
            if handler.level > logging.INFO:
                return None
        return self.handlers  # type: ignore[return-value]  # all JSON handlers, checked above

    def _write_direct(self, batch: list[tuple[int, float, bytes | dict[str, Any]]],
                      handlers: list[JsonStream | RotatingJsonFile]) -> None:
        """Hand the batch to the handlers in one write each: the same lines the logging path
        would produce, without its per-record machinery."""
        formatter = handlers[0].formatter
        assert isinstance(formatter, SidecarJsonFormatter)
        lines: list[bytes] = []
        for _level, _ended, line in batch:
            if type(line) is bytes:
                lines.append(line)
                continue
            try:
                lines.append(formatter.encode_line(line).encode())  # type: ignore[arg-type]
            except Exception:
                logger.exception("cannot write an access line")
        if lines:
            lines.append(b"")
            data = b"\n".join(lines)
            for handler in handlers:
                handler.write_bytes(data, len(lines) - 1)

    def _fields(self, ctx: RequestContext, ended: float, level: int) -> dict[str, Any]:
        """The complete fields of ``ctx``'s access line (the general path)."""
        fields = {"time": utc_time(ended), "level": logging.getLevelName(level),
                  "logger": ACCESS_LOGGER.name}
        return access_fields(ctx, self.content, self.content_max_bytes, into=fields)


def _flush_quietly(handler: logging.Handler) -> None:
    # A stream closed under the handler (a test's captured stdout, a rotated-away file) must
    # not take the request path or shutdown down with it; emit() already reports such errors.
    try:
        handler.flush()
    except (OSError, ValueError):
        pass


@dataclass
class LogsState:
    """What this plugin installed, what it replaced or guarded, and the access log (``None``
    when access lines are off)."""

    access: AccessLog | None
    handlers: list[logging.Handler] = field(default_factory=list)
    replaced: list[logging.Handler] = field(default_factory=list)
    previous_level: int = logging.WARNING
    previous_access_level: int = logging.NOTSET
    #: Handlers of the root logger this plugin did not make, given its redaction filter.
    guarded: list[logging.Handler] = field(default_factory=list)
    redactor: SecretRedactor | None = None


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
        Setting("log.access_flush_seconds", "float", 0.1,
                "Access lines are written in batches, at most this long after their requests "
                "ended (and at shutdown); 0 writes each batch as soon as the event loop has "
                "finished the requests that ended together (more writes, more CPU).",
                env="SIDECAR_ACCESS_LOG_FLUSH_SECONDS", minimum=0),
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


def build_handlers(settings: Settings, redactor: SecretRedactor | None = None
                   ) -> list[logging.Handler]:
    """The JSON handlers the settings ask for, with the request-id and redaction filters
    (``redactor``, or one for the settings' secrets)."""
    formatter = SidecarJsonFormatter()
    if redactor is None:
        redactor = SecretRedactor(secret_values(settings))
    formatter.redactor = redactor
    context = RequestContextFilter()
    handlers: list[logging.Handler] = []
    if settings["log.stdout"]:
        handlers.append(JsonStream(sys.stdout))
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
def validate_settings(settings: Settings) -> list[str]:
    """Message content in log lines is refused in production."""
    if settings.serving and settings["environment"] == "production" and settings["log.content"]:
        return ["SIDECAR_LOG_CONTENT: logging message content is refused when "
                "ENVIRONMENT=production"]
    return []


@hookimpl
def startup(app: web.Application) -> None:
    """Replace the root logger's console handlers with the JSON ones."""
    settings = app[SETTINGS]
    root = logging.getLogger()
    redactor = SecretRedactor(secret_values(settings))
    handlers = build_handlers(settings, redactor)
    access = None
    if settings["log.access"]:
        access = AccessLog(interval=float(settings["log.access_flush_seconds"]),
                           content=bool(settings["log.content"]),
                           content_max_bytes=int(settings["log.content_max_bytes"]),
                           handlers=handlers)
        access.loop = asyncio.get_running_loop()
    state = LogsState(access=access, handlers=handlers, previous_level=root.level,
                      previous_access_level=ACCESS_LOGGER.level,
                      replaced=[h for h in root.handlers if _is_console(h)])
    for handler in state.replaced:
        root.removeHandler(handler)
    # Handlers this plugin leaves in place (files, capture) must not see secrets either.
    state.guarded = [h for h in root.handlers if redactor not in h.filters]
    state.redactor = redactor
    for handler in state.guarded:
        handler.addFilter(redactor)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(getattr(logging, str(settings["log.level"]), logging.INFO))
    if access is not None:
        ACCESS_LOGGER.setLevel(logging.INFO)
    app[LOGS] = state


@hookimpl
def shutdown(app: web.Application) -> None:
    """Write what is queued; put the replaced handlers and the previous levels back."""
    state = app.get(LOGS)
    if state is None:
        return
    if state.access is not None:
        # Requests still finishing (cancelled ones) write their line at once from now on.
        state.access.closed = True
        try:
            state.access.flush()
        except Exception:
            logger.exception("cannot write the last access lines")
    root = logging.getLogger()
    for handler in state.handlers:
        root.removeHandler(handler)
        handler.close()
    if state.redactor is not None:
        for handler in state.guarded:
            handler.removeFilter(state.redactor)
    state.guarded = []
    for handler in state.replaced:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(state.previous_level)
    ACCESS_LOGGER.setLevel(state.previous_access_level)
    state.handlers = []


# --- requests --------------------------------------------------------------------------------


def access_fields(ctx: RequestContext, content: bool = False,
                  content_max_bytes: int = 64 * 1024,
                  into: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields of the access line for ``ctx`` (``None`` values left out), added to
    ``into`` when given."""
    status = ctx.response_status
    fields: dict[str, Any] = {} if into is None else into
    fields.update(request_fields(ctx.method, ctx.path, status, ctx.operation_name,
                                 ctx.is_stream))
    identity = ctx.identity
    if identity is not None:
        fields.update(caller_fields(identity.owner, identity.role, identity.key_id,
                                    identity.org))
    add_request_fields(ctx, status, fields)
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


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """The access line of the request, with how it ended and the error code, if any."""
    access = ctx.app[LOGS].access
    if access is None:
        return
    if ctx.outcome is not None:
        ctx.log["outcome"] = ctx.outcome.value
    if ctx.error is not None:
        ctx.log["error_code"] = ctx.error.code
    access.add(ctx)


@hookimpl
def event_observer(app: web.Application, name: str
                   ) -> Callable[[RequestContext | None, dict[str, Any]], None]:
    """One line per plugin event."""

    def log_event(ctx: RequestContext | None, fields: dict[str, Any]) -> None:
        level = event_level(name, fields)
        if not EVENT_LOGGER.isEnabledFor(level):
            return
        line: dict[str, Any] = {"message": name, "event": name}
        if ctx is not None:
            line["request_id"] = ctx.request_id
            line["operation"] = ctx.operation_name
        for key, value in fields.items():
            line.setdefault(key, value)
        log_fields(EVENT_LOGGER, level, line)

    return log_event


def event_level(name: str, fields: dict[str, Any]) -> int:
    """The level of an event's line: a limiter's pass is DEBUG (there is one per request),
    failures and refusals are warnings, the rest informational."""
    if name == "ratelimit.decision":
        return logging.DEBUG if fields.get("allowed") else logging.INFO
    if name in _WARNING_EVENTS or (
            name == "breaker.transition" and fields.get("to_state") in ("open", "forced_open")
    ) or (name == "ratelimit.fallback" and fields.get("active")):
        return logging.WARNING
    return logging.INFO
