"""``/v1/chat/completions``, ``/v1/fim/completions`` and ``/v1/agents/completions``, as JSON
or as SSE."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .api_agents import get_agent
from .errors import validation_failed
from .generation import (
    count_tokens,
    last_user_text,
    make_reply,
    messages_text,
    split_deltas,
    usage,
)
from .ids import new_uuid, now_unix
from .sse import DONE_FRAME, SSEStream, data_frame
from .state import STATE_KEY
from .validation import read_json_object, require

routes = web.RouteTableDef()

_ROLES = frozenset({"system", "user", "assistant", "tool"})


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_messages(messages: list[Any]) -> None:
    details = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            details.append(
                {
                    "type": "model_attributes_type",
                    "loc": ["body", "messages", index],
                    "msg": "Input should be a valid dictionary",
                    "input": message,
                }
            )
        elif message.get("role") not in _ROLES:
            details.append(
                {
                    "type": "union_tag_invalid",
                    "loc": ["body", "messages", index],
                    "msg": "Input tag does not match any of the expected tags: "
                    "'system', 'user', 'assistant', 'tool'",
                    "input": message,
                }
            )
    if details:
        raise validation_failed(details)


async def _answer(
    request: web.Request, body: dict[str, Any], prompt: str, reply_source: str
) -> web.StreamResponse:
    reply, finish_reason = make_reply(reply_source, _max_tokens(body))
    completion_id = new_uuid().replace("-", "")
    created = now_unix()
    model = body["model"]
    counts = usage(count_tokens(prompt), count_tokens(reply))
    if not body.get("stream"):
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "model": model,
                "created": created,
                "usage": counts,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": reply,
                            "tool_calls": None,
                            "prefix": False,
                        },
                        "finish_reason": finish_reason,
                    }
                ],
            }
        )
    stream = SSEStream(request)
    await stream.start()

    def chunk(delta: dict[str, Any], finish: str | None, last: bool = False) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if last:
            payload["usage"] = counts
        return data_frame(payload)

    await stream.send(chunk({"role": "assistant", "content": ""}, None))
    pieces = split_deltas(reply, request.app[STATE_KEY].settings.stream_tokens)
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        await stream.send(chunk({"content": piece}, finish_reason if last else None, last))
    await stream.send(DONE_FRAME)
    return await stream.finish()


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer with ``"Echo: <last user message>"``, streamed when ``stream`` is true."""
    body = await read_json_object(request)
    require(body, {"model": str, "messages": list})
    _check_messages(body["messages"])
    messages = body["messages"]
    return await _answer(request, body, messages_text(messages), last_user_text(messages))


@routes.post("/v1/fim/completions")
async def fim_completions(request: web.Request) -> web.StreamResponse:
    """Answer a fill-in-the-middle request with ``"Echo: <prompt>"``."""
    body = await read_json_object(request)
    require(body, {"model": str, "prompt": str})
    suffix = body.get("suffix") if isinstance(body.get("suffix"), str) else ""
    prompt = f"{body['prompt']} {suffix}"
    return await _answer(request, body, prompt, body["prompt"])


@routes.post("/v1/agents/completions")
async def agents_completions(request: web.Request) -> web.StreamResponse:
    """Answer as the agent ``agent_id`` would (its model, ``"Echo: <last user message>"``);
    404 for an agent that does not exist."""
    body = await read_json_object(request)
    require(body, {"agent_id": str, "messages": list})
    _check_messages(body["messages"])
    agent = get_agent(request.app[STATE_KEY], body["agent_id"])
    messages = body["messages"]
    answered = {**body, "model": agent.current.get("model", "mistral-medium-latest")}
    return await _answer(request, answered, messages_text(messages), last_user_text(messages))
