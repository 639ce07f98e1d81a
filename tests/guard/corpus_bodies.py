"""Request bodies for the guard corpus: where in which request a corpus text goes.

Each *place* names an operation and a field; :func:`request_for` builds the method, path and
JSON body that put the record's texts there, with nothing else a rule could match.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MODEL = "mistral-small-latest"

Body = dict[str, Any]


def _chat(*messages: dict[str, Any], **extra: Any) -> Body:
    return {"model": MODEL, "messages": list(messages), **extra}


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _tool(description: str = "Look up the weather.", parameter_description: str = "A city.",
          parameter: str = "city") -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": "get_weather", "description": description,
        "parameters": {"type": "object", "properties": {
            parameter: {"type": "string", "description": parameter_description}}}}}


def _arguments(text: str) -> str:
    return json.dumps({"city": "Paris", "note": text}, ensure_ascii=False)


def _start(**fields: Any) -> Body:
    return {"model": MODEL, "inputs": "Hello!", **fields}


CHAT = ("POST", "/v1/chat/completions")
CONVERSATIONS = ("POST", "/v1/conversations")
APPEND = ("POST", "/v1/conversations/conv_corpus")
RESTART = ("POST", "/v1/conversations/conv_corpus/restart")
AGENTS = ("POST", "/v1/agents")

#: place -> (method, path, body from the record's texts).
PLACES: dict[str, tuple[str, str, Callable[[list[str]], Body]]] = {
    "chat.user": (*CHAT, lambda t: _chat(_user(t[0]))),
    "chat.system": (*CHAT, lambda t: _chat({"role": "system", "content": t[0]},
                                           _user("Hi!"))),
    "chat.chunk": (*CHAT, lambda t: _chat({"role": "user", "content": [
        {"type": "text", "text": "Look at this:"}, {"type": "text", "text": t[0]}]})),
    "chat.name": (*CHAT, lambda t: _chat({"role": "user", "content": "Hi!", "name": t[0]})),
    "chat.tool_result": (*CHAT, lambda t: _chat(
        _user("What is the weather?"),
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call1", "name": "get_weather", "content": t[0]})),
    "chat.tool_call_arguments": (*CHAT, lambda t: _chat(
        _user("What is the weather?"),
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call1", "type": "function",
             "function": {"name": "get_weather", "arguments": _arguments(t[0])}}]},
        {"role": "tool", "tool_call_id": "call1", "content": "Sunny."})),
    "chat.tool_description": (*CHAT, lambda t: _chat(_user("Hi!"), tools=[_tool(t[0])])),
    "chat.tool_parameter_description": (*CHAT, lambda t: _chat(
        _user("Hi!"), tools=[_tool(parameter_description=t[0])])),
    "chat.tool_parameter_name": (*CHAT, lambda t: _chat(
        _user("Hi!"), tools=[_tool(parameter=t[0])])),
    "agents.complete.user": ("POST", "/v1/agents/completions",
                             lambda t: {"agent_id": "ag_corpus", "messages": [_user(t[0])]}),
    "fim.prompt": ("POST", "/v1/fim/completions",
                   lambda t: {"model": "codestral-latest", "prompt": t[0]}),
    "fim.suffix": ("POST", "/v1/fim/completions",
                   lambda t: {"model": "codestral-latest", "prompt": "def f():",
                              "suffix": t[0]}),
    "conversations.start.inputs": (*CONVERSATIONS, lambda t: _start(inputs=t[0])),
    "conversations.start.instructions": (*CONVERSATIONS, lambda t: _start(instructions=t[0])),
    "conversations.start.name": (*CONVERSATIONS, lambda t: _start(name=t[0])),
    "conversations.start.description": (*CONVERSATIONS, lambda t: _start(description=t[0])),
    "conversations.start.function_call_arguments": (*CONVERSATIONS, lambda t: _start(inputs=[
        {"type": "message.input", "role": "user", "content": "Weather?"},
        {"type": "function.call", "tool_call_id": "c1", "name": "get_weather",
         "arguments": _arguments(t[0])},
        {"type": "function.result", "tool_call_id": "c1", "result": "Sunny."}])),
    "conversations.start.function_result": (*CONVERSATIONS, lambda t: _start(inputs=[
        {"type": "message.input", "role": "user", "content": "Weather?"},
        {"type": "function.result", "tool_call_id": "c1", "result": t[0]}])),
    "conversations.start.tool_description": (*CONVERSATIONS,
                                             lambda t: _start(tools=[_tool(t[0])])),
    "conversations.append.inputs": (*APPEND, lambda t: {"inputs": t[0]}),
    "conversations.append.instructions": (*APPEND, lambda t: {"inputs": "Go on.",
                                                              "instructions": t[0]}),
    "conversations.restart.inputs": (*RESTART, lambda t: {"inputs": t[0],
                                                          "from_entry_id": "entry_1"}),
    "agents.create.instructions": (*AGENTS, lambda t: {"model": MODEL, "name": "helper",
                                                       "instructions": t[0]}),
    "agents.create.name": (*AGENTS, lambda t: {"model": MODEL, "name": t[0]}),
    "agents.create.description": (*AGENTS, lambda t: {"model": MODEL, "name": "helper",
                                                      "description": t[0]}),
    "agents.create.metadata": (*AGENTS, lambda t: {"model": MODEL, "name": "helper",
                                                   "metadata": {"team": "support",
                                                                "note": t[0]}}),
    "agents.create.tool_description": (*AGENTS, lambda t: {"model": MODEL, "name": "helper",
                                                           "tools": [_tool(t[0])]}),
    "agents.update.instructions": ("PATCH", "/v1/agents/ag_corpus",
                                   lambda t: {"instructions": t[0]}),
    "batch.inline_chat": ("POST", "/v1/batch/jobs", lambda t: {
        "model": MODEL, "endpoint": "/v1/chat/completions",
        "requests": [{"custom_id": "1", "body": {"messages": [_user("Hi!")]}},
                     {"custom_id": "2", "body": {"messages": [_user(t[0])]}}]}),
    # Two texts in two fields.
    "split.messages": (*CHAT, lambda t: _chat(_user(t[0]), _user(t[1]))),
    "split.chunks": (*CHAT, lambda t: _chat({"role": "user", "content": [
        {"type": "text", "text": t[0]}, {"type": "text", "text": t[1]}]})),
    "split.conversation_entries": (*CONVERSATIONS, lambda t: _start(inputs=[
        {"type": "message.input", "role": "user", "content": t[0]},
        {"type": "message.input", "role": "user", "content": t[1]}])),
    "split.system_and_user": (*CHAT, lambda t: _chat({"role": "system", "content": t[0]},
                                                     _user(t[1]))),
}


def request_for(record: dict[str, Any]) -> tuple[str, str, Body]:
    """``(method, path, body)`` carrying ``record["texts"]`` where ``record["place"]`` says."""
    method, path, build = PLACES[record["place"]]
    return method, path, build(list(record["texts"]))


def strings(value: Any) -> list[str]:
    """Every string inside a JSON value, object keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (key, *strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []
