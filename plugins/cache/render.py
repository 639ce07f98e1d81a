"""A stored completion sent again as a stream: the server-sent events a streamed call would
have carried, in one piece.

Each choice's whole message goes in one ``chat.completion.chunk`` (role, content, tool
calls), then a last chunk carries every finish reason and the usage, then ``data: [DONE]``:
what Mistral's streams look like, and what its SDKs and :mod:`proxy.sse` read back into
the same completion.
"""

from __future__ import annotations

from typing import Any

from proxy import jsoncodec

__all__ = ["completion_as_sse"]

_DONE = b"data: [DONE]\n\n"


def completion_as_sse(completion: dict[str, Any]) -> bytes:
    """The event stream of ``completion`` (a ``chat.completion`` object)."""
    base = {"id": completion.get("id"), "object": "chat.completion.chunk",
            "created": completion.get("created"), "model": completion.get("model")}
    frames: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    for position, choice in enumerate(completion.get("choices") or ()):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": message.get("role") or "assistant",
                                 "content": message.get("content") or ""}
        calls = message.get("tool_calls")
        if calls:
            delta["tool_calls"] = [{**call, "index": call.get("index", number)}
                                   for number, call in enumerate(calls)]
        frames.append({**base, "choices": [{"index": index, "delta": delta,
                                            "finish_reason": None}]})
        finals.append({"index": index, "delta": {"content": ""},
                       "finish_reason": choice.get("finish_reason")})
    last: dict[str, Any] = {**base, "choices": finals}
    if completion.get("usage") is not None:
        last["usage"] = completion["usage"]
    frames.append(last)
    return b"".join(b"data: " + jsoncodec.dumps_bytes(frame) + b"\n\n"
                    for frame in frames) + _DONE
