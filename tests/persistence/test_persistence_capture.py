"""What the persistence plugin records, end to end: the real SDK (sync, async, streamed) through
a sidecar with ``store,persistence`` against the mock upstream, rows read straight from the
database (PostgreSQL and SQLite), compared with what the client received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from mistralai.client import Mistral

from tests.conftest import MOCK_KEY, MockUpstream, Sidecar, SidecarFactory, wait_for
from tests.persistence.persistence_helpers import MODEL, StoreReader, persist_env

TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look a word up.",
                                         "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory, store_env: dict[str, str]) -> Sidecar:
    """A recording sidecar on the parametrised store."""
    return await start_sidecar(**persist_env(store_env))


@pytest.fixture
def db(sidecar: Sidecar) -> StoreReader:
    """Direct read access to the sidecar's database."""
    return StoreReader(sidecar.env)


@pytest.fixture
async def sdk(sidecar: Sidecar) -> AsyncIterator[Mistral]:
    """The real SDK pointed at the sidecar."""
    client: Mistral = sidecar.sdk()
    yield client
    await client.__aexit__(None, None, None)
    client.__exit__(None, None, None)


def _delta_text(events: list[Any]) -> str:
    return "".join(e.data.content for e in events if e.event == "message.output.delta")


async def test_agent_create_update_delete_rows(
    sdk: Mistral, db: StoreReader, mock_upstream: MockUpstream
) -> None:
    agent = await sdk.beta.agents.create_async(
        model="mistral-large-latest", name="helper", instructions="be brief",
        description="answers questions", tools=[TOOL],  # type: ignore[list-item]
        completion_args={"temperature": 0.2})
    row = await wait_for(lambda: db.one("agents", agent.id))
    assert (row["name"], row["model"], row["instructions"], row["description"]) == (
        "helper", "mistral-large-latest", "be brief", "answers questions")
    assert row["version"] == 0 and row["status"] == "active" and row["owner_id"] == "anonymous"
    assert row["tools"][0]["function"]["name"] == "lookup"
    assert row["completion_args"]["temperature"] == 0.2

    updated = await asyncio.to_thread(sdk.beta.agents.update, agent_id=agent.id,
                                      name="helper-2", instructions="be briefer")
    row = await wait_for(lambda: (r := db.one("agents", agent.id)) and r["version"] == 1 and r)
    assert (row["name"], row["instructions"], row["version"]) == (
        "helper-2", "be briefer", updated.version)
    assert row["tools"][0]["function"]["name"] == "lookup"

    # A conversation with the agent records the agent and the model that answered.
    started = await sdk.beta.conversations.start_async(agent_id=agent.id, inputs="hi agent")
    entries = await wait_for(lambda: len(e := db.entries(started.conversation_id)) == 2 and e)
    conversation = db.one("conversations", started.conversation_id)
    assert conversation is not None
    assert conversation["agent_id"] == agent.id
    assert conversation["model"] == "mistral-large-latest"
    assert entries[1]["agent_id"] == agent.id and entries[1]["model"] == "mistral-large-latest"

    await sdk.beta.agents.delete_async(agent_id=agent.id)
    await wait_for(lambda: (r := db.one("agents", agent.id)) and r["status"] == "deleted")

    # An agent created behind the sidecar's back: its conversation and its deletion are still
    # recorded (no foreign key on conversations.agent_id; a stub agent row on delete).
    direct = Mistral(api_key=MOCK_KEY, server_url=mock_upstream.url)
    outsider = await direct.beta.agents.create_async(model=MODEL, name="outsider")
    other = await sdk.beta.conversations.start_async(agent_id=outsider.id, inputs="hello")
    await wait_for(lambda: db.one("conversations", other.conversation_id))
    assert db.one("agents", outsider.id) is None
    await asyncio.to_thread(sdk.beta.agents.delete, agent_id=outsider.id)
    stub = await wait_for(lambda: db.one("agents", outsider.id))
    assert stub["status"] == "deleted" and stub["name"] is None


async def test_conversation_rows_match_what_the_client_received(
    sdk: Mistral, db: StoreReader
) -> None:
    started = await sdk.beta.conversations.start_async(
        model=MODEL, inputs="hello there", name="chat-1", description="a test",
        metadata={"team": "qa"})
    cid = started.conversation_id
    appended = await asyncio.to_thread(sdk.beta.conversations.append, conversation_id=cid,
                                       inputs="second turn please")
    first_output = started.outputs[0]
    restarted = await sdk.beta.conversations.restart_async(
        conversation_id=cid, from_entry_id=first_output.id,  # type: ignore[union-attr]
        inputs="a different second turn")
    await sdk.beta.conversations.delete_async(conversation_id=cid)

    await wait_for(lambda: (c := db.one("conversations", cid)) and c["status"] == "deleted")
    entries = await wait_for(lambda: len(e := db.entries(cid)) == 4 and e)
    conversation = db.one("conversations", cid)
    assert conversation is not None
    assert (conversation["model"], conversation["agent_id"], conversation["owner_id"]) == (
        MODEL, None, "anonymous")
    assert (conversation["name"], conversation["description"], conversation["metadata"]) == (
        "chat-1", "a test", {"team": "qa"})

    runs = [("hello there", started), ("second turn please", appended)]
    for index, (text, answer) in enumerate(runs):
        given, got = entries[2 * index], entries[2 * index + 1]
        output = answer.outputs[0]
        assert (given["type"], given["role"], given["content"]) == (
            "message.input", "user", text)
        assert (got["type"], got["role"], got["id"]) == (
            "message.output", "assistant", output.id)  # type: ignore[union-attr]
        assert got["content"] == output.content  # type: ignore[union-attr]
        assert got["model"] == MODEL
        assert given["prompt_tokens"] == answer.usage.prompt_tokens
        assert got["completion_tokens"] == answer.usage.completion_tokens
        assert given["total_tokens"] + got["total_tokens"] == answer.usage.total_tokens
    # Each entry's parent is the entry before it in the conversation, across requests.
    assert entries[0]["parent_entry_id"] is None
    assert [e["parent_entry_id"] for e in entries[1:]] == [e["id"] for e in entries[:-1]]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[0]["created_at"] <= entries[2]["created_at"]

    branch = db.one("conversations", restarted.conversation_id)
    assert branch is not None
    assert branch["restarted_from_conversation_id"] == cid
    assert branch["restarted_from_entry_id"] == first_output.id  # type: ignore[union-attr]
    assert (branch["name"], branch["model"], branch["status"]) == ("chat-1", MODEL, "active")
    new = db.entries(restarted.conversation_id)
    assert [e["content"] for e in new] == [
        "a different second turn", restarted.outputs[0].content]  # type: ignore[union-attr]
    assert new[0]["parent_entry_id"] == first_output.id  # type: ignore[union-attr]
    assert new[0]["prompt_tokens"] == restarted.usage.prompt_tokens
    assert new[1]["completion_tokens"] == restarted.usage.completion_tokens

    usage = db.rows("SELECT * FROM usage_log ORDER BY created_at")
    assert [u["operation"] for u in usage] == [
        "conversations.start", "conversations.append", "conversations.restart"]
    for row, answer in zip(usage, (started, appended, restarted), strict=True):
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
            answer.usage.prompt_tokens, answer.usage.completion_tokens,
            answer.usage.total_tokens)
        assert row["conversation_id"] == answer.conversation_id
        assert row["status"] == 200 and row["streamed"] is False and row["model"] == MODEL


async def test_streamed_conversation_rows_match_the_streamed_text(
    sdk: Mistral, db: StoreReader
) -> None:
    stream = await sdk.beta.conversations.start_stream_async(
        model=MODEL, inputs="stream me please", name="streamed")
    events = [e async for e in stream]
    cid = events[0].data.conversation_id
    first_text, first_usage = _delta_text(events), events[-1].data.usage

    def append_sync() -> list[Any]:
        with sdk.beta.conversations.append_stream(conversation_id=cid,
                                                  inputs="and some more") as appended:
            return list(appended)

    second = await asyncio.to_thread(append_sync)
    entries = await wait_for(lambda: len(e := db.entries(cid)) == 4 and e)
    assert [e["content"] for e in entries] == [
        "stream me please", first_text, "and some more", _delta_text(second)]
    assert first_text == "Echo: stream me please"
    assert entries[0]["prompt_tokens"] == first_usage.prompt_tokens
    assert entries[1]["completion_tokens"] == first_usage.completion_tokens
    assert entries[2]["prompt_tokens"] == second[-1].data.usage.prompt_tokens
    assert entries[3]["completion_tokens"] == second[-1].data.usage.completion_tokens
    output_ids = {e.data.id for e in events if e.event == "message.output.delta"}
    assert output_ids == {entries[1]["id"]}
    assert entries[1]["completed_at"] is not None

    restart = await sdk.beta.conversations.restart_stream_async(
        conversation_id=cid, from_entry_id=entries[1]["id"], inputs="branch off")
    branched = [e async for e in restart]
    new_id = branched[0].data.conversation_id
    new = await wait_for(lambda: len(e := db.entries(new_id)) == 2 and e)
    assert [e["content"] for e in new] == ["branch off", _delta_text(branched)]
    assert new[0]["parent_entry_id"] == entries[1]["id"]
    assert new[1]["completion_tokens"] == branched[-1].data.usage.completion_tokens
    usage = db.rows("SELECT operation, streamed, total_tokens FROM usage_log "
                    "ORDER BY created_at")
    assert [(u["operation"], u["streamed"]) for u in usage] == [
        ("conversations.start", True), ("conversations.append", True),
        ("conversations.restart", True)]
    assert usage[0]["total_tokens"] == first_usage.total_tokens


async def test_model_calls_go_to_the_usage_log_without_content(
    sdk: Mistral, db: StoreReader, mock_upstream: MockUpstream, sidecar: Sidecar
) -> None:
    messages: Any = [{"role": "user", "content": "count these words"}]
    chat = await asyncio.to_thread(sdk.chat.complete, model=MODEL, messages=messages)
    stream = await sdk.chat.stream_async(model=MODEL, messages=messages)
    chunks = [c async for c in stream]
    fim = await sdk.fim.complete_async(model="codestral-latest", prompt="def f(", suffix="")
    emb = await sdk.embeddings.create_async(model="mistral-embed", inputs=["one two", "three"])
    await mock_upstream.fault(
        method="POST", path_prefix="/v1/agents/completions", action="respond", status=200,
        body={"id": "c1", "object": "chat.completion", "model": "mistral-large-latest",
              "created": 1, "usage": {"prompt_tokens": 4, "completion_tokens": 6,
                                      "total_tokens": 10},
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "done"}}]})
    agent_answer = await sdk.agents.complete_async(agent_id="ag_x", messages=messages)
    async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions", headers={"Authorization": "Bearer k"},
            json={"model": MODEL, "messages": [{"role": "nobody"}]}) as refused:
        assert refused.status == 422

    rows = await wait_for(lambda: len(r := db.rows(
        "SELECT * FROM usage_log ORDER BY created_at")) == 6 and r)
    expected = [
        ("chat.complete", MODEL, False, chat.usage),
        ("chat.complete", MODEL, True, chunks[-1].data.usage),
        ("fim.complete", "codestral-latest", False, fim.usage),
        ("embeddings.create", "mistral-embed", False, emb.usage),
        ("agents.complete", "mistral-large-latest", False, agent_answer.usage),
    ]
    for row, (operation, model, streamed, usage) in zip(rows, expected, strict=False):
        assert (row["operation"], row["model"], row["streamed"], row["status"]) == (
            operation, model, streamed, 200)
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
        assert row["owner_id"] == "anonymous" and row["content"] is None
        assert row["latency_ms"] is not None and row["latency_ms"] >= 0
    assert rows[4]["agent_id"] == "ag_x"
    assert (rows[5]["operation"], rows[5]["status"], rows[5]["total_tokens"]) == (
        "chat.complete", 422, 0)
    assert len({r["request_id"] for r in rows}) == 6


async def test_chat_content_is_kept_only_when_enabled(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**persist_env(store_env, SIDECAR_PERSISTENCE_CHAT_CONTENT="true"))
    db = StoreReader(sidecar.env)
    client = sidecar.sdk()
    answer = await client.chat.complete_async(
        model=MODEL, messages=[{"role": "user", "content": "remember this"}])
    stream = await client.chat.stream_async(
        model=MODEL, messages=[{"role": "user", "content": "and this, streamed"}])
    streamed = "".join([c.data.choices[0].delta.content or "" async for c in stream])
    # PostgreSQL cannot store NUL in text: the row is kept, the character replaced.
    await client.chat.complete_async(model=MODEL,
                                     messages=[{"role": "user", "content": "nul\x00here"}])
    await client.embeddings.create_async(model="mistral-embed", inputs=["no vectors kept"])

    rows = await wait_for(lambda: len(r := db.rows(
        "SELECT * FROM usage_log ORDER BY created_at")) == 4 and r)
    first, second, third, embedding = (r["content"] for r in rows)
    assert first["request"]["messages"] == [{"role": "user", "content": "remember this"}]
    assert first["response"]["choices"][0]["message"]["content"] == \
        answer.choices[0].message.content
    assert second["request"]["stream"] is True
    assert second["response"]["choices"][0]["message"]["content"] == streamed
    assert third["request"]["messages"][0]["content"] == "nul\ufffdhere"
    assert embedding is None
