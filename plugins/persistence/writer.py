"""Applying records to the database: idempotent upserts, one batch per transaction.

Every statement is valid in PostgreSQL and SQLite. Applying a record twice changes nothing
(``ON CONFLICT`` on the row's id), which is what makes spool replay exactly-once. Records are
applied in order; consecutive records of one kind share one ``executemany``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from plugins.persistence.records import (
    AGENT,
    AGENT_DELETED,
    CONVERSATION,
    ENTRY,
    USAGE,
    USAGE_COLUMNS,
    Record,
)
from plugins.store.db import Executor
from proxy.jsoncodec import dumps as json_text

_LATER = "CASE WHEN excluded.{c} > conversations.{c} THEN excluded.{c} ELSE conversations.{c} END"
_EARLIER = ("CASE WHEN excluded.{c} < conversations.{c} THEN excluded.{c} "
            "ELSE conversations.{c} END")

_AGENT_SQL = """
INSERT INTO agents (id, name, description, model, instructions, version, tools,
                    completion_args, owner_id, status, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name, description = excluded.description, model = excluded.model,
    instructions = excluded.instructions, version = excluded.version, tools = excluded.tools,
    completion_args = excluded.completion_args, status = excluded.status,
    updated_at = excluded.updated_at
"""

_AGENT_DELETED_SQL = """
INSERT INTO agents (id, owner_id, status, created_at, updated_at)
VALUES (?, ?, 'deleted', ?, ?)
ON CONFLICT (id) DO UPDATE SET status = 'deleted', updated_at = excluded.updated_at
"""

_CONVERSATION_SQL = {
    "start": f"""
INSERT INTO conversations (id, agent_id, model, owner_id, name, description, metadata, status,
                           created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)
ON CONFLICT (id) DO UPDATE SET
    agent_id = COALESCE(excluded.agent_id, conversations.agent_id),
    model = COALESCE(excluded.model, conversations.model),
    name = COALESCE(excluded.name, conversations.name),
    description = COALESCE(excluded.description, conversations.description),
    metadata = COALESCE(excluded.metadata, conversations.metadata),
    created_at = {_EARLIER.format(c="created_at")}
""",
    "touch": f"""
INSERT INTO conversations (id, agent_id, model, owner_id, status, created_at, updated_at)
VALUES (?, ?, ?, ?, 'active', ?, ?)
ON CONFLICT (id) DO UPDATE SET
    agent_id = COALESCE(conversations.agent_id, excluded.agent_id),
    model = COALESCE(conversations.model, excluded.model),
    updated_at = {_LATER.format(c="updated_at")}
""",
    "restart": """
INSERT INTO conversations (id, agent_id, model, owner_id, name, description, metadata, status,
                           created_at, updated_at, restarted_from_conversation_id,
                           restarted_from_entry_id)
VALUES (?,
        COALESCE(?, (SELECT s.agent_id FROM conversations s WHERE s.id = ?)),
        COALESCE(?, (SELECT s.model FROM conversations s WHERE s.id = ?)),
        ?,
        (SELECT s.name FROM conversations s WHERE s.id = ?),
        (SELECT s.description FROM conversations s WHERE s.id = ?),
        COALESCE(?, (SELECT s.metadata FROM conversations s WHERE s.id = ?)),
        'active', ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING
""",
    "delete": f"""
INSERT INTO conversations (id, owner_id, status, created_at, updated_at)
VALUES (?, ?, 'deleted', ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = 'deleted', updated_at = {_LATER.format(c="updated_at")}
""",
}

_ENTRY_COLUMNS = (
    ("id", "text"), ("conversation_id", "text"), ("seq", "int"), ("type", "text"),
    ("role", "text"), ("content", "text"), ("content_json", "jsonb"),
    ("prompt_tokens", "int"), ("completion_tokens", "int"), ("total_tokens", "int"),
    ("token_count", "int"),
    ("model", "text"), ("agent_id", "text"), ("tool_name", "text"), ("tool_call_id", "text"),
    ("parent_entry_id", "text"), ("request_id", "text"), ("created_at", "timestamptz"),
    ("completed_at", "timestamptz"),
)


def _insert_from_json_rows(table: str, columns: Sequence[tuple[str, str]],
                           first: int = 0) -> dict[str, str]:
    """Per dialect: insert the rows of one JSON array of arrays (one parameter), skipping ids
    already stored. Each array holds the columns' values from position ``first`` on."""
    names = ", ".join(name for name, _ in columns)
    pg = []
    for index, (_name, kind) in enumerate(columns, start=first):
        if kind == "jsonb":
            pg.append(f"NULLIF(r -> {index}, 'null'::jsonb)")
        elif kind == "text":
            pg.append(f"r ->> {index}")
        else:
            pg.append(f"CAST(r ->> {index} AS {kind})")
    sqlite = [f"json_extract(value, '$[{index}]')"
              for index in range(first, first + len(columns))]
    return {
        # jsonb: parsed once; with json every ->> would parse the element's text again.
        "postgres": f"INSERT INTO {table} ({names}) SELECT {', '.join(pg)} "
                    "FROM jsonb_array_elements(CAST(? AS jsonb)) AS r ON CONFLICT (id) DO NOTHING",
        "sqlite": f"INSERT INTO {table} ({names}) SELECT {', '.join(sqlite)} "
                  "FROM json_each(?) WHERE true ON CONFLICT (id) DO NOTHING",
    }


_ENTRIES_FROM_JSON = _insert_from_json_rows("conversation_entries", _ENTRY_COLUMNS)

_ENTRY_INSERT = """
INSERT INTO conversation_entries (id, conversation_id, seq, type, role, content,
                                  content_json, prompt_tokens, completion_tokens, total_tokens,
                                  token_count, model, agent_id, tool_name, tool_call_id,
                                  parent_entry_id, request_id, created_at, completed_at)
"""

_USAGE_INSERT = """
INSERT INTO usage_log (id, request_id, owner_id, operation, model, agent_id, conversation_id,
                       status, streamed, prompt_tokens, completion_tokens, total_tokens,
                       latency_ms, created_at, content, key_id, org, cost_nanos, currency,
                       estimated)
"""

# Usage rows (one per model call: the hot path) go in one statement per batch, as the JSON
# array of their spool lines (arrays: kind, time, then the columns), the very text already
# written to the spool: no per-value encoding in Python, one statement to plan.
_USAGE_ROWS_FROM_JSON = _insert_from_json_rows("usage_log", tuple(zip(USAGE_COLUMNS, (
    "text", "text", "text", "text", "text", "text", "text", "int", "boolean", "int", "int",
    "int", "float8", "timestamptz", "jsonb", "text", "text", "bigint", "text", "boolean"),
    strict=True)),
    first=2)
# Usage records in the object form (spooled by earlier versions) go as the JSON array of
# their data; columns with a default get it when a record lacks them.
_USAGE_DEFAULTS = {"streamed": "false", "prompt_tokens": "0", "completion_tokens": "0",
                   "total_tokens": "0", "estimated": "false"}


def _usage_select(extract: str) -> str:
    return ", ".join(
        f"COALESCE({extract.format(c)}, {_USAGE_DEFAULTS[c]})" if c in _USAGE_DEFAULTS
        else extract.format(c) for c in USAGE_COLUMNS)


_USAGE_FROM_JSON = {
    "postgres": f"""
INSERT INTO usage_log ({", ".join(USAGE_COLUMNS)})
SELECT {_usage_select("{}")}
FROM json_populate_recordset(NULL::usage_log, CAST(? AS json))
ON CONFLICT (id) DO NOTHING
""",
    "sqlite": f"""
INSERT INTO usage_log ({", ".join(USAGE_COLUMNS)})
SELECT {_usage_select("json_extract(value, '$.{}')")}
FROM json_each(?) WHERE true
ON CONFLICT (id) DO NOTHING
""",
}

# A JSON array of strings as one parameter, read as rows of text: one short statement
# whatever the number of ids (psycopg re-parses statements with many placeholders).
_TEXT_LIST = {
    "postgres": "SELECT json_array_elements_text(CAST(? AS json))",
    "sqlite": "SELECT value FROM json_each(?)",
}
_TEXT_TABLE = {
    "postgres": "(SELECT json_array_elements_text(CAST(? AS json)) AS value)",
    "sqlite": "json_each(?)",
}


async def write_batch(tx: Executor, records: Sequence[Record], dialect: str = "sqlite") -> None:
    """Apply ``records`` on ``tx`` (the caller owns the transaction), a few statements per
    table rather than a few per request.

    Order is kept where it matters: agent changes in their order; conversations before their
    entries, starts before the restarts that copy from them, deletions last; entries in their
    order. ``dialect`` (``sqlite`` or ``postgres``) picks the bulk statements.
    """
    agents: list[Record] = []
    conversations: dict[str, list[Record]] = {mode: [] for mode in _CONVERSATION_SQL}
    entries: list[Record] = []
    usage: list[Record] = []
    for record in records:
        if record.kind == ENTRY:
            entries.append(record)
        elif record.kind == USAGE:
            usage.append(record)
        elif record.kind == CONVERSATION:
            mode = str(record.data.get("mode"))
            conversations[mode if mode in conversations else "touch"].append(record)
        else:
            agents.append(record)
    start = 0
    while start < len(agents):
        kind = agents[start].kind
        end = start + 1
        while end < len(agents) and agents[end].kind == kind:
            end += 1
        sql, params = _statement(kind, "")
        await tx.executemany(sql, [params(r.data) for r in agents[start:end]])
        start = end
    for mode, group in conversations.items():
        if group:
            sql, params = _statement(CONVERSATION, mode)
            rows = _merge_touches(group) if mode == "touch" else [r.data for r in group]
            await tx.executemany(sql, [params(row) for row in rows])
    if entries:
        await _write_entries(tx, entries, dialect)
    if usage:
        await _write_usage(tx, usage, dialect)


def _merge_touches(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One touch per conversation: a busy conversation is updated once per batch, not once
    per turn (the upsert keeps the first agent and model, the latest update time)."""
    merged: dict[str, dict[str, Any]] = {}
    for record in records:
        d = record.data
        seen = merged.get(d["id"])
        if seen is None:
            merged[d["id"]] = dict(d)
            continue
        seen["agent_id"] = seen.get("agent_id") or d.get("agent_id")
        seen["model"] = seen.get("model") or d.get("model")
        seen["created_at"] = min(seen["created_at"], d["created_at"])
        seen["updated_at"] = max(seen["updated_at"], d["updated_at"])
    return list(merged.values())


def _agent_params(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["id"], _t(d.get("name")), _t(d.get("description")), _t(d.get("model")),
            _t(d.get("instructions")), d.get("version"), _j(d.get("tools")),
            _j(d.get("completion_args")), d["owner_id"], d["created_at"], d["updated_at"])


def _agent_deleted_params(d: dict[str, Any]) -> tuple[Any, ...]:
    return d["id"], d["owner_id"], d["created_at"], d["updated_at"]


def _conversation_params(mode: str, d: dict[str, Any]) -> tuple[Any, ...]:
    if mode == "start":
        return (d["id"], d.get("agent_id"), d.get("model"), d["owner_id"], _t(d.get("name")),
                _t(d.get("description")), _j(d.get("metadata")), d["created_at"],
                d["updated_at"])
    if mode == "touch":
        return (d["id"], d.get("agent_id"), d.get("model"), d["owner_id"], d["created_at"],
                d["updated_at"])
    if mode == "restart":
        source = d.get("source_id")
        return (d["id"], d.get("agent_id"), source, d.get("model"), source, d["owner_id"],
                source, source, _j(d.get("metadata")), source, d["created_at"],
                d["updated_at"], source, d.get("from_entry_id"))
    return d["id"], d["owner_id"], d["created_at"], d["updated_at"]


def _usage_params(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["id"], d["request_id"], d["owner_id"], d["operation"], d.get("model"),
            d.get("agent_id"), d.get("conversation_id"), int(d["status"]),
            bool(d.get("streamed")), int(d.get("prompt_tokens") or 0),
            int(d.get("completion_tokens") or 0), int(d.get("total_tokens") or 0),
            d.get("latency_ms"), d["created_at"], _j(d.get("content")), _t(d.get("key_id")),
            _t(d.get("org")), d.get("cost_nanos"), d.get("currency"),
            bool(d.get("estimated")))


def _statement(kind: str, mode: str) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
    if kind == AGENT:
        return _AGENT_SQL, _agent_params
    if kind == AGENT_DELETED:
        return _AGENT_DELETED_SQL, _agent_deleted_params
    chosen = mode if mode in _CONVERSATION_SQL else "touch"
    return _CONVERSATION_SQL[chosen], lambda d: _conversation_params(chosen, d)


async def _write_usage(tx: Executor, records: Sequence[Record], dialect: str) -> None:
    rows = [r for r in records if r.row is not None]
    objects = [r for r in records if r.row is None] if len(rows) < len(records) else []
    # Lines end in a newline, which JSON reads as space between array elements.
    for group, statements, part in ((rows, _USAGE_ROWS_FROM_JSON, Record.to_line),
                                    (objects, _USAGE_FROM_JSON, Record.data_json_bytes)):
        if not group:
            continue
        payload = (b"[" + b",".join([part(r) for r in group]) + b"]").decode()
        if dialect in statements and "\\u0000" not in payload:
            await tx.execute(statements[dialect], (payload,))
        else:
            # NUL cannot be stored in PostgreSQL text: the row-by-row path replaces it.
            await _insert_rows(tx, _USAGE_INSERT, [_usage_params(r.data) for r in group])


async def _write_entries(tx: Executor, records: Sequence[Record], dialect: str) -> None:
    """Insert new entries with their position (``seq``) and parent in their conversation.

    Entries already stored (a replay) are skipped before positions are handed out, so a
    replay neither duplicates an entry nor leaves a gap in its conversation's sequence.
    """
    ids = _TEXT_LIST.get(dialect, _TEXT_LIST["sqlite"])
    found = await tx.fetchall(
        f"SELECT id FROM conversation_entries WHERE id IN ({ids})",
        (json_text([r.data["id"] for r in records]),))
    existing = {str(row["id"]) for row in found}
    # The last entry of each conversation, by index lookups (a GROUP BY would read every entry
    # of a long conversation on every batch).
    tails = await tx.fetchall(
        "SELECT c.value AS conversation_id, "
        "(SELECT e.id FROM conversation_entries e WHERE e.conversation_id = c.value "
        "ORDER BY e.seq DESC LIMIT 1) AS id, "
        "(SELECT MAX(e.seq) FROM conversation_entries e WHERE e.conversation_id = c.value) "
        f"AS seq FROM {_TEXT_TABLE.get(dialect, _TEXT_TABLE['sqlite'])} AS c",
        (json_text(sorted({r.data["conversation_id"] for r in records})),))
    last: dict[str, tuple[str | None, int]] = {
        str(row["conversation_id"]): (str(row["id"]), int(row["seq"]))
        for row in tails if row["id"] is not None}
    rows_out = []
    for record in records:
        d = record.data
        if d["id"] in existing:
            continue
        existing.add(d["id"])
        conversation_id = d["conversation_id"]
        previous_id, previous_seq = last.get(conversation_id, (None, 0))
        parent = previous_id if d.get("parent_is_previous") else d.get("parent_entry_id")
        seq = previous_seq + 1
        last[conversation_id] = (d["id"], seq)
        total = int(d.get("total_tokens") or 0)
        rows_out.append([
            d["id"], conversation_id, seq, d["type"], d.get("role"), d.get("content_text"),
            d.get("content_json"), int(d.get("prompt_tokens") or 0),
            int(d.get("completion_tokens") or 0), total, total,
            d.get("model"), d.get("agent_id"), d.get("tool_name"), d.get("tool_call_id"),
            parent, d.get("request_id"), d["created_at"], d.get("completed_at"),
        ])
    if not rows_out:
        return
    payload = json_text(rows_out)
    if dialect in _ENTRIES_FROM_JSON and "\\u0000" not in payload:
        await tx.execute(_ENTRIES_FROM_JSON[dialect], (payload,))
        return
    # NUL cannot be stored in PostgreSQL text: the row-by-row path replaces it.
    await _insert_rows(tx, _ENTRY_INSERT, [
        tuple(_j(v) if i == 6 else _t(v) for i, v in enumerate(row)) for row in rows_out])


async def _insert_rows(tx: Executor, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``insert`` (up to its column list) for ``rows``, skipping ids already stored.

    One short statement run for every row (``executemany``): psycopg pipelines it, while a
    long multi-row ``VALUES`` would be re-parsed by psycopg on every call.
    """
    if rows:
        marks = ", ".join("?" * len(rows[0]))
        await tx.executemany(f"{insert}VALUES ({marks}) ON CONFLICT (id) DO NOTHING", rows)


def _t(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; keep the row rather than poison the batch.
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _j(value: Any) -> str | None:
    if value is None:
        return None
    text = json_text(value)
    if "\\u0000" in text:
        text = json_text(_scrub(value))
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value
