"""``/v1/conversations``: start, append, restart (JSON or SSE), read, list, delete.

Every run adds one ``message.output`` entry answering the last user message with
``"Echo: <words>"``. Prompt tokens are the words of every message entry the run saw
(stored context plus new inputs), completion tokens the words of the reply.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from .api_agents import get_agent
from .errors import not_found, validation_failed
from .generation import content_text, count_tokens, make_reply, split_deltas
from .ids import new_id, now_iso
from .sse import SSEStream, event_frame
from .state import STATE_KEY, ConversationRecord, MockState
from .validation import paginate, query_int, read_json_object, require

routes = web.RouteTableDef()

_MESSAGE_TYPES = frozenset({"message.input", "message.output"})


def _conversation(state: MockState, conversation_id: str) -> ConversationRecord:
    record = state.conversations.get(conversation_id)
    if record is None:
        raise not_found(f"Conversation {conversation_id} not found")
    return record


def _input_entries(inputs: Any) -> list[dict[str, Any]]:
    """Turn the request's ``inputs`` (text or entry list) into stored entries."""
    if inputs is None:
        return []
    items = [{"role": "user", "content": inputs}] if isinstance(inputs, str) else inputs
    entries = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise validation_failed(
                [
                    {
                        "type": "model_attributes_type",
                        "loc": ["body", "inputs", index],
                        "msg": "Input should be a valid dictionary",
                        "input": item,
                    }
                ]
            )
        now = now_iso()
        entry = {
            **item,
            "object": "entry",
            "id": new_id("msg"),
            "created_at": now,
            "completed_at": now,
        }
        entry.setdefault("type", "message.input")
        if entry["type"] == "message.input":
            entry.setdefault("role", "user")
            entry.setdefault("prefix", False)
        entries.append(entry)
    return entries


def _agent_model(state: MockState, meta: dict[str, Any]) -> str:
    """The model answering a conversation (its own, or its agent's at the pinned version)."""
    if "model" in meta:
        return str(meta["model"])
    record = state.agents.get(meta["agent_id"])
    if record is None:
        return "mistral-small-latest"
    version = meta.get("agent_version")
    snapshot = record.versions.get(version) if isinstance(version, int) else None
    return str((snapshot or record.current)["model"])


async def _run(
    request: web.Request,
    body: dict[str, Any],
    meta: dict[str, Any],
    entries: list[dict[str, Any]],
) -> web.StreamResponse:
    """Generate the reply to ``entries``, store the conversation and answer the client."""
    state = request.app[STATE_KEY]
    user_text = ""
    prompt_words = 0
    for entry in entries:
        if entry.get("type") in _MESSAGE_TYPES:
            text = content_text(entry.get("content"))
            prompt_words += count_tokens(text)
            if entry.get("role") == "user":
                user_text = text
    completion_args = body.get("completion_args") or meta.get("completion_args") or {}
    max_tokens = completion_args.get("max_tokens") if isinstance(completion_args, dict) else None
    reply, _ = make_reply(user_text, max_tokens if isinstance(max_tokens, int) else None)
    agent_id = meta.get("agent_id")
    model = _agent_model(state, meta)
    created = now_iso()
    output = {
        "object": "entry",
        "type": "message.output",
        "id": new_id("msg"),
        "created_at": created,
        "completed_at": now_iso(),
        "agent_id": agent_id,
        "model": model,
        "role": "assistant",
        "content": reply,
    }
    entries.append(output)
    meta["updated_at"] = output["completed_at"]
    if body.get("store", True) is not False:
        state.conversations[meta["id"]] = ConversationRecord(meta=meta, entries=entries)
    completion_words = count_tokens(reply)
    usage = {
        "prompt_tokens": prompt_words,
        "completion_tokens": completion_words,
        "total_tokens": prompt_words + completion_words,
        "connector_tokens": None,
        "connectors": None,
    }
    if not body.get("stream"):
        return web.json_response(
            {
                "object": "conversation.response",
                "conversation_id": meta["id"],
                "outputs": [output],
                "usage": usage,
                "guardrails": None,
            }
        )
    stream = SSEStream(request)
    await stream.start()
    await stream.send(
        event_frame(
            "conversation.response.started",
            {
                "type": "conversation.response.started",
                "created_at": created,
                "conversation_id": meta["id"],
            },
        )
    )
    for piece in split_deltas(reply, state.settings.stream_tokens):
        await stream.send(
            event_frame(
                "message.output.delta",
                {
                    "type": "message.output.delta",
                    "created_at": now_iso(),
                    "output_index": 0,
                    "id": output["id"],
                    "content_index": 0,
                    "content": piece,
                    "model": model,
                    "agent_id": agent_id,
                    "role": "assistant",
                },
            )
        )
    await stream.send(
        event_frame(
            "conversation.response.done",
            {"type": "conversation.response.done", "created_at": now_iso(), "usage": usage},
        )
    )
    return await stream.finish()


@routes.post("/v1/conversations")
async def start_conversation(request: web.Request) -> web.StreamResponse:
    """Start a conversation with an agent (``agent_id``) or a model (``model``)."""
    state = request.app[STATE_KEY]
    body = await read_json_object(request)
    require(body, {"inputs": (str, list)})
    now = now_iso()
    meta: dict[str, Any] = {
        "object": "conversation",
        "id": new_id("conv"),
        "created_at": now,
        "updated_at": now,
        "name": body.get("name"),
        "description": body.get("description"),
        "metadata": body.get("metadata"),
    }
    if body.get("agent_id"):
        agent = get_agent(state, str(body["agent_id"]))
        version = body.get("agent_version")
        if isinstance(version, int) and version not in agent.versions:
            raise not_found(f"Version {version} not found for agent {body['agent_id']}")
        meta.update(agent_id=body["agent_id"], agent_version=version)
    elif isinstance(body.get("model"), str) and body["model"]:
        meta.update(
            model=body["model"],
            instructions=body.get("instructions"),
            tools=body.get("tools") or [],
            completion_args=body.get("completion_args") or {},
            guardrails=body.get("guardrails"),
        )
    else:
        raise validation_failed(
            [
                {
                    "type": "value_error",
                    "loc": ["body"],
                    "msg": "Value error, Either agent_id or model must be provided",
                    "input": body,
                }
            ]
        )
    return await _run(request, body, meta, _input_entries(body["inputs"]))


@routes.get("/v1/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    """Conversation metadata, newest first, ``page``/``page_size`` paginated."""
    page = query_int(request, "page", 0)
    page_size = query_int(request, "page_size", 100, minimum=1)
    metas = [r.meta for r in reversed(request.app[STATE_KEY].conversations.values())]
    return web.json_response(paginate(metas, page, page_size))


@routes.get("/v1/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    """One conversation's metadata."""
    state = request.app[STATE_KEY]
    return web.json_response(_conversation(state, request.match_info["conversation_id"]).meta)


@routes.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(request: web.Request) -> web.Response:
    """Forget a conversation."""
    state = request.app[STATE_KEY]
    _conversation(state, request.match_info["conversation_id"])
    del state.conversations[request.match_info["conversation_id"]]
    return web.Response(status=204)


@routes.post("/v1/conversations/{conversation_id}")
async def append_to_conversation(request: web.Request) -> web.StreamResponse:
    """Add inputs to a conversation and run it again."""
    state = request.app[STATE_KEY]
    body = await read_json_object(request)
    if body.get("inputs") is not None:
        require(body, {"inputs": (str, list)})
    record = _conversation(state, request.match_info["conversation_id"])
    entries = [*record.entries, *_input_entries(body.get("inputs"))]
    if body.get("store", True) is False:
        meta = copy.deepcopy(record.meta)
    else:
        meta = record.meta
    return await _run(request, body, meta, entries)


@routes.post("/v1/conversations/{conversation_id}/restart")
async def restart_conversation(request: web.Request) -> web.StreamResponse:
    """Branch a new conversation from the entries up to ``from_entry_id`` (inclusive)."""
    state = request.app[STATE_KEY]
    body = await read_json_object(request)
    require(body, {"from_entry_id": str})
    if body.get("inputs") is not None:
        require(body, {"inputs": (str, list)})
    source = _conversation(state, request.match_info["conversation_id"])
    ids = [entry.get("id") for entry in source.entries]
    if body["from_entry_id"] not in ids:
        raise not_found(f"Entry {body['from_entry_id']} not found in conversation")
    kept = source.entries[: ids.index(body["from_entry_id"]) + 1]
    now = now_iso()
    entries = [{**copy.deepcopy(entry), "id": new_id("msg")} for entry in kept]
    meta = {
        **copy.deepcopy(source.meta),
        "id": new_id("conv"),
        "created_at": now,
        "updated_at": now,
    }
    if body.get("metadata") is not None:
        meta["metadata"] = body["metadata"]
    if "agent_id" in meta and body.get("agent_version") is not None:
        meta["agent_version"] = body["agent_version"]
    return await _run(request, body, meta, [*entries, *_input_entries(body.get("inputs"))])


@routes.get("/v1/conversations/{conversation_id}/history")
async def conversation_history(request: web.Request) -> web.Response:
    """Every entry of the conversation, oldest first."""
    conversation_id = request.match_info["conversation_id"]
    record = _conversation(request.app[STATE_KEY], conversation_id)
    return web.json_response(
        {
            "object": "conversation.history",
            "conversation_id": conversation_id,
            "entries": record.entries,
        }
    )


@routes.get("/v1/conversations/{conversation_id}/messages")
async def conversation_messages(request: web.Request) -> web.Response:
    """Only the message entries (inputs and outputs) of the conversation."""
    conversation_id = request.match_info["conversation_id"]
    record = _conversation(request.app[STATE_KEY], conversation_id)
    messages = [e for e in record.entries if e.get("type") in _MESSAGE_TYPES]
    return web.json_response(
        {
            "object": "conversation.messages",
            "conversation_id": conversation_id,
            "messages": messages,
        }
    )
