"""Every entry type is recorded: function calls, tool executions, agent handoffs and function
results, from JSON answers and from streams (reassembled by the core), through the real SDK."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import MockUpstream, SidecarFactory, wait_for
from tests.persistence.persistence_helpers import MODEL, StoreReader, persist_env

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
OUTPUTS: list[dict[str, Any]] = [
    {"object": "entry", "type": "function.call", "id": "fc_1", "tool_call_id": "call_1",
     "name": "get_weather", "arguments": '{"city": "Paris"}', "model": MODEL,
     "agent_id": "ag_a", "created_at": "2025-01-01T10:00:00.100Z",
     "completed_at": "2025-01-01T10:00:00.200Z"},
    {"object": "entry", "type": "tool.execution", "id": "te_1", "name": "web_search",
     "arguments": '{"query": "weather"}', "info": {"results": 3}, "model": MODEL,
     "agent_id": "ag_a", "created_at": "2025-01-01T10:00:00.300Z",
     "completed_at": "2025-01-01T10:00:00.400Z"},
    {"object": "entry", "type": "agent.handoff", "id": "ho_1", "previous_agent_id": "ag_a",
     "previous_agent_name": "triage", "next_agent_id": "ag_b", "next_agent_name": "expert",
     "created_at": "2025-01-01T10:00:00.500Z", "completed_at": "2025-01-01T10:00:00.600Z"},
    {"object": "entry", "type": "message.output", "id": "mo_1", "role": "assistant",
     "content": [{"type": "text", "text": "Sunny, "}, {"type": "text", "text": "22 C."}],
     "model": MODEL, "agent_id": "ag_b", "created_at": "2025-01-01T10:00:00.700Z",
     "completed_at": "2025-01-01T10:00:00.800Z"},
]


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    payload = {"type": kind, "created_at": "2025-01-01T10:00:00.500Z", **data}
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


STREAM = b"".join([
    _frame("conversation.response.started", {"conversation_id": "conv_s",
                                             "created_at": "2025-01-01T10:00:00Z"}),
    _frame("function.call.delta", {"id": "fc_1", "output_index": 0, "tool_call_id": "call_1",
                                   "name": "get_weather", "arguments": '{"city": ',
                                   "model": MODEL, "agent_id": "ag_a"}),
    _frame("function.call.delta", {"id": "fc_1", "output_index": 0, "tool_call_id": "call_1",
                                   "name": "get_weather", "arguments": '"Paris"}'}),
    _frame("tool.execution.started", {"id": "te_1", "output_index": 1, "name": "web_search",
                                      "arguments": '{"query": ', "model": MODEL}),
    _frame("tool.execution.delta", {"id": "te_1", "output_index": 1, "name": "web_search",
                                    "arguments": '"weather"}'}),
    _frame("tool.execution.done", {"id": "te_1", "output_index": 1, "name": "web_search",
                                   "info": {"results": 3}}),
    _frame("agent.handoff.started", {"id": "ho_1", "output_index": 2,
                                     "previous_agent_id": "ag_a",
                                     "previous_agent_name": "triage"}),
    _frame("agent.handoff.done", {"id": "ho_1", "output_index": 2, "next_agent_id": "ag_b",
                                  "next_agent_name": "expert"}),
    _frame("message.output.delta", {"id": "mo_1", "output_index": 3, "content_index": 0,
                                    "content": "Sunny, ", "role": "assistant",
                                    "model": MODEL, "agent_id": "ag_b"}),
    _frame("message.output.delta", {"id": "mo_1", "output_index": 3, "content_index": 0,
                                    "content": "22 C.", "role": "assistant"}),
    _frame("conversation.response.done", {"usage": USAGE,
                                          "created_at": "2025-01-01T10:00:01Z"}),
])


def _check_outputs(entries: list[dict[str, Any]], given_text: str) -> None:
    assert [e["type"] for e in entries] == [
        "message.input", "function.call", "tool.execution", "agent.handoff", "message.output"]
    given, call, tool, handoff, message = entries
    assert given["content"] == given_text and given["prompt_tokens"] == 11
    assert (call["tool_name"], call["tool_call_id"], call["content"]) == (
        "get_weather", "call_1", '{"city": "Paris"}')
    assert (call["model"], call["agent_id"]) == (MODEL, "ag_a")
    assert (tool["tool_name"], tool["content"]) == ("web_search", '{"query": "weather"}')
    assert tool["content_json"]["info"] == {"results": 3}
    assert handoff["content_json"]["next_agent_name"] == "expert"
    assert handoff["content_json"]["previous_agent_id"] == "ag_a"
    assert message["content"] == "Sunny, 22 C." and message["agent_id"] == "ag_b"
    assert (message["completion_tokens"], message["total_tokens"]) == (7, 7)
    assert sum(e["total_tokens"] for e in entries) == USAGE["total_tokens"]
    assert [e["parent_entry_id"] for e in entries[1:]] == [e["id"] for e in entries[:-1]]
    assert all(e["created_at"] and e["completed_at"] for e in entries)


async def test_json_answer_with_calls_tools_and_handoffs(
    start_sidecar: SidecarFactory, store_env: dict[str, str], mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**persist_env(store_env))
    db = StoreReader(sidecar.env)
    await mock_upstream.fault(
        method="POST", path_prefix="/v1/conversations", action="respond", status=200,
        body={"object": "conversation.response", "conversation_id": "conv_j",
              "outputs": OUTPUTS, "usage": USAGE})
    sdk = sidecar.sdk()
    answer = await sdk.beta.conversations.start_async(agent_id="ag_a", inputs="weather?")
    assert [o.type for o in answer.outputs] == [o["type"] for o in OUTPUTS]
    entries = await wait_for(lambda: len(e := db.entries("conv_j")) == 5 and e)
    _check_outputs(entries, "weather?")
    assert entries[1]["created_at"].startswith("2025-01-01T10:00:00.1")

    # The caller answers the function call: a function.result input entry.
    started = await sdk.beta.conversations.start_async(model=MODEL, inputs="call a tool")
    await sdk.beta.conversations.append_async(
        conversation_id=started.conversation_id,
        inputs=[{"type": "function.result", "tool_call_id": "call_1", "result": "22 C"}])
    entries = await wait_for(lambda: len(e := db.entries(started.conversation_id)) == 4 and e)
    assert (entries[2]["type"], entries[2]["tool_call_id"], entries[2]["content"]) == (
        "function.result", "call_1", "22 C")

    # NUL cannot be stored in PostgreSQL text; the entry is kept with U+FFFD in its place.
    nul = await sdk.beta.conversations.start_async(model=MODEL, inputs="nul\x00inside")
    entries = await wait_for(lambda: len(e := db.entries(nul.conversation_id)) == 2 and e)
    assert entries[0]["content"] == "nul\ufffdinside"
    assert entries[0]["content_json"] == {"content": "nul\ufffdinside"}


async def test_streamed_calls_tools_and_handoffs_are_reassembled(
    start_sidecar: SidecarFactory, store_env: dict[str, str],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    async def conversations(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for frame in STREAM.split(b"\n\n")[:-1]:
            await response.write(frame + b"\n\n")
        await response.write_eof()
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/conversations", conversations)
    server = await aiohttp_server(upstream)
    sidecar = await start_sidecar(**persist_env(
        store_env, MISTRAL_BASE_URL=str(server.make_url("")).rstrip("/")))
    db = StoreReader(sidecar.env)

    stream = await sidecar.sdk().beta.conversations.start_stream_async(
        agent_id="ag_a", inputs="weather, streamed?")
    events = [e async for e in stream]
    assert events[-1].event == "conversation.response.done"
    entries = await wait_for(lambda: len(e := db.entries("conv_s")) == 5 and e)
    _check_outputs(entries, "weather, streamed?")
    streamed_text = "".join(e.data.content for e in events if e.event == "message.output.delta")
    assert entries[4]["content"] == streamed_text
    assert entries[4]["completed_at"].startswith("2025-01-01T10:00:01")
