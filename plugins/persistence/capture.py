"""Turning one finished request into the records to persist (pure functions, no I/O).

:class:`Exchange` is the part of a request context capture needs; :func:`records_for` maps
it to records by operation:

- ``agents.create`` / ``agents.update`` / ``agents.update_version``: the agent as upstream
  returned it; ``agents.delete``: the agent's status becomes ``deleted``.
- ``conversations.start`` / ``append`` / ``restart`` (JSON or streamed): the conversation row,
  one entry per input (from the request's ``inputs``) and per output, and a usage row.
- ``conversations.delete``: the conversation's status becomes ``deleted``.
- ``chat.complete``, ``fim.complete``, ``embeddings.create``, ``agents.complete``: a usage row
  (request and response content only when enabled, never embedding vectors).

Only successful (2xx) answers change agents and conversations; every answer of a model call
(errors included) gets a usage row so ``mistral-sidecar usage`` counts requests honestly.

Token attribution: a run's ``usage`` is split over its entries so that the entries of a
conversation add up to what upstream billed. Prompt tokens go to the run's last input entry
(its first output entry when the run had no inputs); completion tokens go to the run's last
``message.output`` entry (its last output entry when there is none). ``total_tokens`` of an
entry is its prompt plus completion tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plugins.persistence.records import (
    AGENT,
    AGENT_DELETED,
    CONVERSATION,
    ENTRY,
    Record,
    canonical_time,
    iso_from_unix,
)

#: Operations answered by a model; each answer is one usage_log row.
USAGE_OPERATIONS = frozenset({
    "chat.complete", "fim.complete", "embeddings.create", "agents.complete",
    "conversations.start", "conversations.append", "conversations.restart",
})
_AGENT_WRITES = frozenset({"agents.create", "agents.update", "agents.update_version"})
_CONVERSATION_RUNS = frozenset({"conversations.start", "conversations.append",
                                "conversations.restart"})
#: Operations whose requests produce records (and are refused while the spool is full).
RECORDED_OPERATIONS = USAGE_OPERATIONS | _AGENT_WRITES | {"agents.delete",
                                                          "conversations.delete"}
_CONTENT_OPERATIONS = frozenset({"chat.complete", "fim.complete", "agents.complete"})
#: Operations whose only record is their usage (streamed or not, they keep their name), with
#: the model named by the response or, failing that, the request body: the request path
#: builds their record directly.
MODEL_CALLS = frozenset({"chat.complete", "fim.complete", "embeddings.create"})
#: Entry fields that have columns of their own; the rest of an entry is ``content_json``.
_ENTRY_COLUMNS = frozenset({"id", "object", "type", "role", "created_at", "completed_at",
                            "model", "agent_id", "tool_call_id"})


def base_operation(name: str) -> str:
    """The operation name without its ``_stream`` suffix (streamed and JSON are one thing)."""
    return name.removesuffix("_stream")


@dataclass(slots=True)
class Exchange:
    """What capture needs to know about one finished request.

    ``request`` is the parsed request body, or a function returning it: parsing is only paid
    for when a record needs something from the body.
    """

    operation: str
    record_id: str
    request_id: str
    owner: str
    status: int
    streamed: bool
    started_at: float
    latency_ms: float | None
    path_params: Mapping[str, str]
    request: Any
    response: Any
    usage: tuple[int, int, int] | None
    #: The caller's key and organisation (``None`` without authentication), and what the
    #: request cost: billionths of ``currency`` (``None`` when nothing priced it).
    key_id: str | None = None
    org: str | None = None
    cost_nanos: int | None = None
    currency: str | None = None
    #: The usage is the sidecar's estimate of a call cut short (``Usage.estimated``).
    estimated: bool = False

    def request_body(self) -> dict[str, Any]:
        """The request body as a dict (empty if it was not a JSON object)."""
        if callable(self.request):
            self.request = self.request()
        return self.request if isinstance(self.request, dict) else {}


def records_for(ex: Exchange, *, chat_content: bool = False) -> list[Record]:
    """Every record this exchange produces, in the order they must be written."""
    op = base_operation(ex.operation)
    ok = 200 <= ex.status < 300
    records: list[Record] = []
    if ok and op in _AGENT_WRITES:
        records.extend(_agent(ex))
    elif ok and op == "agents.delete":
        records.extend(_agent_deleted(ex))
    elif ok and op in _CONVERSATION_RUNS:
        records.extend(_conversation_run(ex, op))
    elif ok and op == "conversations.delete":
        records.extend(_conversation_deleted(ex))
    if op in USAGE_OPERATIONS:
        records.append(_usage(ex, op, chat_content))
    return records


# --- agents ----------------------------------------------------------------------------------


def _agent(ex: Exchange) -> list[Record]:
    agent = ex.response
    if not isinstance(agent, dict) or not isinstance(agent.get("id"), str):
        return []
    now = iso_from_unix(ex.started_at)
    data = {
        "id": agent["id"],
        "name": _str(agent.get("name")),
        "description": _str(agent.get("description")),
        "model": _str(agent.get("model")),
        "instructions": _str(agent.get("instructions")),
        "version": agent.get("version") if isinstance(agent.get("version"), int) else None,
        "tools": agent.get("tools"),
        "completion_args": agent.get("completion_args"),
        "owner_id": ex.owner,
        "status": "active",
        "created_at": canonical_time(agent.get("created_at"), now),
        "updated_at": canonical_time(agent.get("updated_at"), now),
    }
    return [Record(AGENT, data, ex.started_at)]


def _agent_deleted(ex: Exchange) -> list[Record]:
    agent_id = ex.path_params.get("agent_id")
    if not agent_id:
        return []
    now = iso_from_unix(ex.started_at)
    data = {"id": agent_id, "owner_id": ex.owner, "created_at": now, "updated_at": now}
    return [Record(AGENT_DELETED, data, ex.started_at)]


# --- conversations ---------------------------------------------------------------------------


def _conversation_deleted(ex: Exchange) -> list[Record]:
    conversation_id = ex.path_params.get("conversation_id")
    if not conversation_id:
        return []
    now = iso_from_unix(ex.started_at)
    data = {"mode": "delete", "id": conversation_id, "owner_id": ex.owner, "created_at": now,
            "updated_at": now}
    return [Record(CONVERSATION, data, ex.started_at)]


def _conversation_run(ex: Exchange, op: str) -> list[Record]:
    response = ex.response if isinstance(ex.response, dict) else {}
    request = ex.request_body()
    conversation_id = response.get("conversation_id")
    if op == "conversations.append":
        conversation_id = conversation_id or ex.path_params.get("conversation_id")
    if not isinstance(conversation_id, str) or not conversation_id:
        return []
    now = iso_from_unix(ex.started_at)
    outputs = [o for o in response.get("outputs") or () if isinstance(o, dict)]
    answered_by = next((o for o in outputs if o.get("model") or o.get("agent_id")), {})
    conversation: dict[str, Any] = {
        "id": conversation_id,
        "owner_id": ex.owner,
        "agent_id": _str(request.get("agent_id")) or _str(answered_by.get("agent_id")),
        "model": _str(request.get("model")) or _str(answered_by.get("model")),
        "created_at": now,
        "updated_at": now,
    }
    first_parent: str | None = None
    parent_is_previous = True
    if op == "conversations.start":
        conversation.update(mode="start", name=_str(request.get("name")),
                            description=_str(request.get("description")),
                            metadata=request.get("metadata"))
    elif op == "conversations.restart":
        source = ex.path_params.get("conversation_id")
        first_parent = _str(request.get("from_entry_id"))
        parent_is_previous = False
        conversation.update(mode="restart", source_id=source, from_entry_id=first_parent,
                            metadata=request.get("metadata"))
    else:
        conversation.update(mode="touch")
    records = [Record(CONVERSATION, conversation, ex.started_at)]

    inputs = _input_entries(ex, request.get("inputs"), now)
    produced = [_output_entry(ex, o, i, now) for i, o in enumerate(outputs)]
    _attribute_tokens(inputs, produced, ex.usage)
    parent = first_parent
    for index, entry in enumerate(inputs + produced):
        entry["conversation_id"] = conversation_id
        entry["request_id"] = ex.request_id
        entry["parent_entry_id"] = parent
        entry["parent_is_previous"] = parent_is_previous and index == 0
        parent = entry["id"]
        records.append(Record(ENTRY, entry, ex.started_at))
    return records


def _input_entries(ex: Exchange, inputs: Any, now: str) -> list[dict[str, Any]]:
    """Entries for the request's ``inputs`` (a string, or a list of entry objects).

    Mistral gives input entries ids server-side and does not return them, so ours are derived
    from the request's record id and the input's position: stable across replays.
    """
    if isinstance(inputs, str):
        items: list[Any] = [{"role": "user", "content": inputs}]
    elif isinstance(inputs, list):
        items = inputs
    else:
        return []
    entries = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        kind = _str(item.get("type")) or "message.input"
        entry = _entry_columns(item, kind)
        entry["id"] = f"{ex.record_id}:in:{index}"
        if kind == "message.input" and not entry["role"]:
            entry["role"] = "user"
        entry["model"] = None
        entry["agent_id"] = None
        entry["created_at"] = now
        entry["completed_at"] = now
        entries.append(entry)
    return entries


def _output_entry(ex: Exchange, output: dict[str, Any], index: int, now: str) -> dict[str, Any]:
    kind = _str(output.get("type")) or "message.output"
    entry = _entry_columns(output, kind)
    entry["id"] = _str(output.get("id")) or f"{ex.record_id}:out:{index}"
    entry["created_at"] = canonical_time(output.get("created_at"), now)
    entry["completed_at"] = canonical_time(output.get("completed_at"))
    return entry


def _entry_columns(item: dict[str, Any], kind: str) -> dict[str, Any]:
    rest = {k: v for k, v in item.items() if k not in _ENTRY_COLUMNS and v is not None}
    return {
        "type": kind,
        "role": _str(item.get("role")),
        "content_text": entry_text(kind, item),
        "content_json": rest or None,
        "model": _str(item.get("model")),
        "agent_id": _str(item.get("agent_id")),
        "tool_name": _str(item.get("name")) if kind in ("function.call",
                                                        "tool.execution") else None,
        "tool_call_id": _str(item.get("tool_call_id")),
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


def entry_text(kind: str, item: dict[str, Any]) -> str | None:
    """The plain text of an entry: message text, call arguments or a function's result."""
    if kind.startswith("message."):
        return content_text(item.get("content"))
    if kind in ("function.call", "tool.execution"):
        arguments = item.get("arguments")
        if isinstance(arguments, str):
            return arguments
        return None if arguments is None else json.dumps(arguments, ensure_ascii=False)
    if kind == "function.result":
        result = item.get("result")
        return result if isinstance(result, str) else None
    return None


def content_text(content: Any) -> str | None:
    """Flatten message content (a string, or typed chunks) to its text."""
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for chunk in content:
            if isinstance(chunk, str):
                parts.append(chunk)
            elif isinstance(chunk, dict) and isinstance(chunk.get("text"), str):
                parts.append(chunk["text"])
        return "".join(parts)
    return None


def _attribute_tokens(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                      usage: tuple[int, int, int] | None) -> None:
    if usage is None:
        return
    prompt, completion, _total = usage
    prompt_entry = inputs[-1] if inputs else (outputs[0] if outputs else None)
    messages = [o for o in outputs if o["type"] == "message.output"]
    completion_entry = (messages[-1] if messages else outputs[-1] if outputs
                        else prompt_entry)
    if prompt_entry is not None:
        prompt_entry["prompt_tokens"] = prompt
    if completion_entry is not None:
        completion_entry["completion_tokens"] = completion
    for entry in (*inputs, *outputs):
        entry["total_tokens"] = entry["prompt_tokens"] + entry["completion_tokens"]


# --- usage log -------------------------------------------------------------------------------


def _usage(ex: Exchange, op: str, chat_content: bool) -> Record:
    response = ex.response if isinstance(ex.response, dict) else {}
    model = _str(response.get("model"))
    conversation_id = None
    if op.startswith("conversations."):
        outputs = response.get("outputs")
        answered_by = next((o for o in outputs if isinstance(o, dict) and o.get("model")),
                           {}) if isinstance(outputs, list) else {}
        model = model or _str(answered_by.get("model"))
        conversation_id = (_str(response.get("conversation_id"))
                           or ex.path_params.get("conversation_id"))
    content = None
    wants_request = chat_content or not model or op == "agents.complete"
    request = ex.request_body() if wants_request else {}
    model = model or _str(request.get("model"))
    if chat_content and op in _CONTENT_OPERATIONS:
        content = {"request": request or None, "response": response or None}
    return usage_record(ex.record_id, ex.request_id, ex.owner, op, model,
                        _str(request.get("agent_id")), conversation_id, ex.status, ex.streamed,
                        ex.usage, ex.latency_ms, ex.started_at, content,
                        ex.key_id, ex.org, ex.cost_nanos, ex.currency, ex.estimated)


def usage_record(record_id: str, request_id: str, owner: str, operation: str,
                 model: str | None, agent_id: str | None, conversation_id: str | None,
                 status: int, streamed: bool, usage: tuple[int, int, int] | None,
                 latency_ms: float | None, started_at: float,
                 content: dict[str, Any] | None = None, key_id: str | None = None,
                 org: str | None = None, cost_nanos: int | None = None,
                 currency: str | None = None, estimated: bool = False) -> Record:
    """The usage-log record of one model call (``operation`` without ``_stream``); its cost
    in billionths of ``currency`` (:mod:`proxy.money`), ``None`` when
    unknown."""
    prompt, completion, total = usage or (0, 0, 0)
    # Positional, in USAGE_COLUMNS order: this runs for every model call.
    return Record.usage_row(
        started_at, record_id, request_id, owner, operation, model, agent_id, conversation_id,
        status, streamed, prompt, completion, total,
        # Three decimals, rounded half up (round(x, 3) costs several times more).
        None if latency_ms is None else int(latency_ms * 1000 + 0.5) / 1000,
        iso_from_unix(started_at), content, key_id, org, cost_nanos, currency, estimated)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
