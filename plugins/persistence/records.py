"""What the persistence plugin writes: one :class:`Record` per row change, as JSON lines.

A record is self-contained and idempotent to apply (every write is an upsert keyed by the
row's id), so the same record may be written twice (a replayed spool, a commit whose
acknowledgement was lost) without changing the result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from proxy import jsoncodec
from proxy.money import to_nanos
from proxy.timefmt import utc_date_time

#: Record kinds, one per kind of row change (see :mod:`plugins.persistence.writer`).
AGENT = "agent"
AGENT_DELETED = "agent_deleted"
CONVERSATION = "conversation"
ENTRY = "entry"
USAGE = "usage"
KINDS = frozenset({AGENT, AGENT_DELETED, CONVERSATION, ENTRY, USAGE})

#: The columns of a usage row in the order a usage line lists them after its kind and time.
USAGE_COLUMNS = ("id", "request_id", "owner_id", "operation", "model", "agent_id",
                 "conversation_id", "status", "streamed", "prompt_tokens", "completion_tokens",
                 "total_tokens", "latency_ms", "created_at", "content", "key_id", "org",
                 "cost_nanos", "currency", "estimated")
_ROW_LENGTH = 2 + len(USAGE_COLUMNS)
#: What a usage line spooled by an earlier version lacks, by the columns added since: keys,
#: organisations and costs (``None``: unknown), then whether the usage was estimated (no:
#: earlier versions recorded only what upstream reported).
_ADDED_COLUMNS = (None, None, None, None, False)
_OLDER_LENGTHS = frozenset({_ROW_LENGTH - 1, _ROW_LENGTH - len(_ADDED_COLUMNS)})

#: A cost is stored as an integer number of billionths of its currency (``cost_nanos``,
#: :mod:`proxy.money`).
_BIGINT = 2 ** 63


def cost_nanos(cost: Decimal | None) -> int | None:
    """``cost`` in billionths of its currency, rounded half up; ``None`` when unknown, or
    beyond what the column holds (a 64-bit integer), which would fail its whole batch."""
    if cost is None:
        return None
    nanos = to_nanos(cost)
    return nanos if -_BIGINT <= nanos < _BIGINT else None


class Record:
    """One row change: its ``kind``, its column values (``data``, not changed once the record
    exists) and when it was made (``at``, Unix seconds, used for the lag gauge).

    A usage record (one per model call: thousands a second) is made as a ``row`` instead: the
    tuple ``(kind, at, *values in USAGE_COLUMNS order)``, whose spool line is a JSON array
    and which the database write takes as it is; ``data`` is built from it only if asked for.
    """

    __slots__ = ("_data", "_json", "_line", "at", "kind", "row")

    def __init__(self, kind: str, data: dict[str, Any] | None, at: float,
                 row: tuple[Any, ...] | None = None) -> None:
        self.kind = kind
        self.at = at
        self.row = row
        self._data = data
        self._json: bytes | None = None
        self._line: bytes | None = None

    @classmethod
    def usage_row(cls, at: float, *values: Any) -> Record:
        """A usage record from its column values, in ``USAGE_COLUMNS`` order."""
        return cls(USAGE, None, at, (USAGE, at, *values))

    @property
    def data(self) -> dict[str, Any]:
        """The record's column values by name."""
        if self._data is None:
            self._data = dict(zip(USAGE_COLUMNS, self.row[2:], strict=True)) if self.row else {}
        return self._data

    def __repr__(self) -> str:
        return f"Record({self.kind!r}, {self.data!r}, {self.at!r})"

    def data_json_bytes(self) -> bytes:
        """``data`` as UTF-8 JSON, encoded once: the spool line and the database write share
        it."""
        if self._json is None:
            self._json = jsoncodec.dumps_bytes(self.data)
        return self._json

    def to_line(self) -> bytes:
        """The record as one JSON line (the spool format): an object with ``kind``, ``at``
        and ``data``, or, for a ``row``, the row as an array."""
        if self._line is not None:
            return self._line
        if self.row is not None:
            try:
                line = orjson.dumps(self.row, option=orjson.OPT_APPEND_NEWLINE)
            except (TypeError, orjson.JSONEncodeError):  # what orjson refuses, the stdlib takes
                line = jsoncodec.dumps_bytes(list(self.row)) + b"\n"
            self._line = line
            return line
        # orjson writes the float (Python's shortest-repr formatting costs several times more)
        # and takes the data already encoded.
        return orjson.dumps({"kind": self.kind, "at": self.at,
                             "data": orjson.Fragment(self.data_json_bytes())},
                            option=orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_line(cls, line: bytes) -> Record:
        """Parse a spool line; raises ``ValueError`` if it is not a record."""
        obj = jsoncodec.loads(line)
        if (isinstance(obj, list) and obj[0:1] == [USAGE] and isinstance(obj[1], int | float)
                and (len(obj) == _ROW_LENGTH or len(obj) in _OLDER_LENGTHS)):
            missing = _ROW_LENGTH - len(obj)
            row = tuple(obj) + (_ADDED_COLUMNS[-missing:] if missing else ())
            return cls(USAGE, None, float(obj[1]), row)
        if not isinstance(obj, dict) or obj.get("kind") not in KINDS or not isinstance(
                obj.get("data"), dict):
            raise ValueError("not a persistence record")
        return cls(obj["kind"], obj["data"], float(obj.get("at") or 0.0))


def iso_from_unix(seconds: float) -> str:
    """Unix seconds as the canonical timestamp text (UTC, microseconds, ``Z``)."""
    whole = int(seconds)
    if whole > seconds:  # int() truncates towards zero; before 1970 that is up
        whole -= 1
    micros = int((seconds - whole) * 1_000_000 + 0.5)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    # %-formatting: an f-string's format spec goes through the general formatter, which
    # costs several times more (this runs for every usage record).
    return "%s.%06dZ" % (utc_date_time(whole), micros)  # noqa: UP031


def canonical_time(value: Any, fallback: str | None = None) -> str | None:
    """Any ISO-8601 timestamp (or datetime) as canonical UTC text; ``fallback`` if unusable.

    One format everywhere keeps SQLite's text comparisons chronological and lets PostgreSQL
    parse the same strings into ``TIMESTAMPTZ``.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return fallback
    else:
        return fallback
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
