"""Log records as JSON lines: python-json-logger's formatter, encoding with orjson."""

from __future__ import annotations

import logging

from pythonjsonlogger.core import RESERVED_ATTRS, LogData
from pythonjsonlogger.json import JsonEncoder
from pythonjsonlogger.orjson import OrjsonFormatter

from proxy.timefmt import utc_date_time

#: For the lines orjson cannot write, or writes with text beyond ASCII.
_ASCII_JSON = JsonEncoder(ensure_ascii=True, separators=(",", ":"))


def utc_time(seconds: float) -> str:
    """Unix ``seconds`` as a line's ``time``: ``2025-01-31T12:00:00.123Z`` (UTC,
    milliseconds)."""
    second = int(seconds)
    return f"{utc_date_time(second)}.{int((seconds - second) * 1000):03d}Z"


class SidecarJsonFormatter(OrjsonFormatter):
    """One compact JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message`` and ``environment`` (ENVIRONMENT), then the fields of a dict message (access
    and event lines), the record's extra attributes and the exception (``exc_info``), if any.

    Lines are ASCII (other characters ``\\u``-escaped), so they never depend on the output's
    encoding. orjson writes nearly every line; the standard library's encoder the rest:
    text beyond ASCII, and what orjson refuses (a lone surrogate, an integer beyond 64
    bits). Values neither encoder knows are written as their ``str()``.
    """

    def __init__(self, environment: str = "") -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "taskName"],
            static_fields={"environment": environment} if environment else None,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``2025-01-31T12:00:00.123Z``."""
        return utc_time(record.created)

    def jsonify_log_record(self, log_data: LogData) -> str:
        """The line's JSON text."""
        try:
            text = super().jsonify_log_record(log_data)
        except TypeError:  # orjson.JSONEncodeError is one
            return _ASCII_JSON.encode(log_data)
        return text if text.isascii() else _ASCII_JSON.encode(log_data)
