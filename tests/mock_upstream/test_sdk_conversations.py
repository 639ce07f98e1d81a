"""The real SDK against the mock: conversations, JSON and streamed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mistralai.client import Mistral, errors


def _streamed_text(events: list[Any]) -> tuple[str, list[str]]:
    kinds = [e.event for e in events]
    text = "".join(e.data.content for e in events if e.event == "message.output.delta")
    return text, kinds


async def test_start_append_and_read_back(sdk: Mistral) -> None:
    started = await sdk.beta.conversations.start_async(
        model="mistral-small-latest", inputs="hello mock", name="chat-1"
    )
    conversation_id = started.conversation_id
    assert conversation_id.startswith("conv_")
    assert started.outputs[0].content == "Echo: hello mock"  # type: ignore[union-attr]
    assert (started.usage.prompt_tokens, started.usage.completion_tokens) == (2, 3)

    appended = await asyncio.to_thread(
        sdk.beta.conversations.append, conversation_id=conversation_id, inputs="second turn"
    )
    assert appended.conversation_id == conversation_id
    assert appended.outputs[0].content == "Echo: second turn"  # type: ignore[union-attr]
    # The whole context counts: "hello mock" + "Echo: hello mock" + "second turn".
    assert appended.usage.prompt_tokens == 7

    meta = await sdk.beta.conversations.get_async(conversation_id=conversation_id)
    assert meta.id == conversation_id and meta.name == "chat-1"
    assert getattr(meta, "model", None) == "mistral-small-latest"

    history = await sdk.beta.conversations.get_history_async(conversation_id=conversation_id)
    assert [e.type for e in history.entries] == [
        "message.input",
        "message.output",
        "message.input",
        "message.output",
    ]
    assert all(e.id and e.created_at for e in history.entries)  # type: ignore[union-attr]

    messages = await asyncio.to_thread(
        sdk.beta.conversations.get_messages, conversation_id=conversation_id
    )
    assert [m.content for m in messages.messages] == [
        "hello mock",
        "Echo: hello mock",
        "second turn",
        "Echo: second turn",
    ]


async def test_start_with_agent_uses_agent_model(sdk: Mistral) -> None:
    agent = await sdk.beta.agents.create_async(model="mistral-large-latest", name="a")
    started = await sdk.beta.conversations.start_async(agent_id=agent.id, inputs="hi")
    output = started.outputs[0]
    assert output.agent_id == agent.id  # type: ignore[union-attr]
    assert output.model == "mistral-large-latest"  # type: ignore[union-attr]
    meta = await sdk.beta.conversations.get_async(conversation_id=started.conversation_id)
    assert getattr(meta, "agent_id", None) == agent.id


async def test_restart_branches_a_new_conversation(sdk: Mistral) -> None:
    started = await sdk.beta.conversations.start_async(model="mistral-small-latest", inputs="one")
    cid = started.conversation_id
    await sdk.beta.conversations.append_async(conversation_id=cid, inputs="two")
    original = await sdk.beta.conversations.get_history_async(conversation_id=cid)
    first_output_id = original.entries[1].id  # type: ignore[union-attr]

    restarted = await sdk.beta.conversations.restart_async(
        conversation_id=cid, from_entry_id=first_output_id, inputs="three"
    )
    assert restarted.conversation_id != cid
    assert restarted.outputs[0].content == "Echo: three"  # type: ignore[union-attr]
    branch = await sdk.beta.conversations.get_messages_async(
        conversation_id=restarted.conversation_id
    )
    assert [m.content for m in branch.messages] == ["one", "Echo: one", "three", "Echo: three"]
    unchanged = await sdk.beta.conversations.get_history_async(conversation_id=cid)
    assert len(unchanged.entries) == 4

    with pytest.raises(errors.SDKError) as caught:
        await sdk.beta.conversations.restart_async(
            conversation_id=cid, from_entry_id="msg_unknown", inputs="x"
        )
    assert caught.value.status_code == 404


async def test_list_paginates_and_delete_forgets(sdk: Mistral) -> None:
    ids = []
    for index in range(3):
        started = await sdk.beta.conversations.start_async(
            model="mistral-small-latest", inputs=f"n{index}"
        )
        ids.append(started.conversation_id)

    page = await sdk.beta.conversations.list_async(page=0, page_size=2)
    rest = await asyncio.to_thread(sdk.beta.conversations.list, page=1, page_size=2)
    assert [c.id for c in page] == [ids[2], ids[1]]
    assert [c.id for c in rest] == [ids[0]]

    await sdk.beta.conversations.delete_async(conversation_id=ids[0])
    with pytest.raises(errors.SDKError) as caught:
        await sdk.beta.conversations.get_async(conversation_id=ids[0])
    assert caught.value.status_code == 404


async def test_stream_variants_match_json_usage(sdk: Mistral) -> None:
    stream = await sdk.beta.conversations.start_stream_async(
        model="mistral-small-latest", inputs="stream me please"
    )
    events = [e async for e in stream]
    text, kinds = _streamed_text(events)
    assert kinds == [
        "conversation.response.started",
        *["message.output.delta"] * 8,
        "conversation.response.done",
    ]
    assert text == "Echo: stream me please"
    cid = events[0].data.conversation_id
    assert events[-1].data.usage.total_tokens == 3 + 4

    stream = await sdk.beta.conversations.append_stream_async(conversation_id=cid, inputs="more")
    appended_text, _ = _streamed_text([e async for e in stream])
    assert appended_text == "Echo: more"

    history = await sdk.beta.conversations.get_history_async(conversation_id=cid)
    first_input = history.entries[0].id  # type: ignore[union-attr]

    def restart_sync() -> list[Any]:
        with sdk.beta.conversations.restart_stream(
            conversation_id=cid, from_entry_id=first_input
        ) as restart:
            return list(restart)

    restarted = await asyncio.to_thread(restart_sync)
    restarted_text, _ = _streamed_text(restarted)
    assert restarted_text == "Echo: stream me please"
    assert restarted[0].data.conversation_id != cid

    json_answer = await sdk.beta.conversations.start_async(
        model="mistral-small-latest", inputs="stream me please"
    )
    assert json_answer.usage == events[-1].data.usage


async def test_start_without_model_or_agent_is_rejected(sdk: Mistral) -> None:
    with pytest.raises(errors.HTTPValidationError):
        await sdk.beta.conversations.start_async(inputs="orphan")
