"""The real mistralai SDK, sync and async, through the sidecar against the mock upstream."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from mistralai.client import Mistral

from tests.conftest import MOCK_KEY, MockUpstream, Sidecar, SidecarFactory

MODEL = "mistral-small-latest"


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> Sidecar:
    """A sidecar with only the example plugin: pure forwarding."""
    return await start_sidecar(SIDECAR_PLUGINS_CHAIN="via")


@pytest.fixture
async def sdk(sidecar: Sidecar) -> Any:
    client: Mistral = sidecar.sdk()
    yield client
    await client.__aexit__(None, None, None)
    client.__exit__(None, None, None)


async def test_chat_complete_sync_and_async(sdk: Mistral) -> None:
    messages: Any = [{"role": "user", "content": "hello sidecar"}]
    sync = await asyncio.to_thread(sdk.chat.complete, model=MODEL, messages=messages)
    assert sync.choices[0].message.content == "Echo: hello sidecar"
    assert sync.usage.prompt_tokens > 0
    async_ = await sdk.chat.complete_async(model=MODEL, messages=messages)
    assert async_.choices[0].message.content == sync.choices[0].message.content
    assert async_.usage.total_tokens == sync.usage.total_tokens


async def test_chat_stream_sync_and_async_reassemble_to_the_same_text(sdk: Mistral) -> None:
    messages: Any = [{"role": "user", "content": "stream this text please"}]

    def sync_stream() -> str:
        return "".join(e.data.choices[0].delta.content or "" for e in
                       sdk.chat.stream(model=MODEL, messages=messages))

    text_sync = await asyncio.to_thread(sync_stream)
    stream = await sdk.chat.stream_async(model=MODEL, messages=messages)
    chunks = [event async for event in stream]
    text_async = "".join(e.data.choices[0].delta.content or "" for e in chunks)
    assert text_sync == text_async == "Echo: stream this text please"
    assert chunks[-1].data.usage is not None


async def test_stream_frames_keep_their_original_spacing(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.settings(token_interval_ms=120, stream_tokens=5)
    client = sidecar.sdk()
    stream = await client.chat.stream_async(
        model=MODEL, messages=[{"role": "user", "content": "a b c d e f"}])
    arrivals = []
    async for _event in stream:
        arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) >= 4
    # Buffering would deliver frames in a burst (gaps near 0); forwarding keeps ~120 ms.
    assert min(gaps[:4]) > 0.06, gaps


async def test_fim_embeddings_models(sdk: Mistral) -> None:
    fim = await sdk.fim.complete_async(model="codestral-latest", prompt="def f(", suffix="")
    assert fim.choices[0].message.content
    emb = await asyncio.to_thread(sdk.embeddings.create, model="mistral-embed",
                                  inputs=["one", "two"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 1024
    models = await sdk.models.list_async()
    assert any(m.id == MODEL for m in models.data or [])
    one = await asyncio.to_thread(sdk.models.retrieve, model_id=MODEL)
    assert one.id == MODEL


async def test_agents_create_get_list(sdk: Mistral) -> None:
    agent = await sdk.beta.agents.create_async(model=MODEL, name="helper",
                                               instructions="be brief")
    got = await asyncio.to_thread(sdk.beta.agents.get, agent_id=agent.id)
    assert got.name == "helper" and got.instructions == "be brief"
    listed = await sdk.beta.agents.list_async()
    assert agent.id in [a.id for a in listed]


async def test_conversations_lifecycle_sync_and_async(sdk: Mistral) -> None:
    started = await sdk.beta.conversations.start_async(model=MODEL, inputs="first")
    cid = started.conversation_id
    appended = await asyncio.to_thread(sdk.beta.conversations.append,
                                       conversation_id=cid, inputs="second")
    assert appended.outputs[0].content == "Echo: second"  # type: ignore[union-attr]
    history = await sdk.beta.conversations.get_history_async(conversation_id=cid)
    assert len(history.entries) == 4
    messages = await asyncio.to_thread(sdk.beta.conversations.get_messages, conversation_id=cid)
    assert [m.content for m in messages.messages][-1] == "Echo: second"
    restarted = await sdk.beta.conversations.restart_async(
        conversation_id=cid, from_entry_id=history.entries[1].id, inputs="again")
    assert restarted.conversation_id != cid


async def test_conversation_stream_variants(sdk: Mistral) -> None:
    stream = await sdk.beta.conversations.start_stream_async(model=MODEL, inputs="streamed start")
    events = [e async for e in stream]
    kinds = [e.event for e in events]
    assert kinds[0] == "conversation.response.started"
    assert kinds[-1] == "conversation.response.done"
    cid = events[0].data.conversation_id  # type: ignore[union-attr]
    text = "".join(e.data.content for e in events if e.event == "message.output.delta")
    assert text == "Echo: streamed start"

    def append_sync() -> list[Any]:
        return list(sdk.beta.conversations.append_stream(conversation_id=cid, inputs="more"))

    appended = await asyncio.to_thread(append_sync)
    assert appended[-1].event == "conversation.response.done"
    history = await sdk.beta.conversations.get_history_async(conversation_id=cid)
    restart = await sdk.beta.conversations.restart_stream_async(
        conversation_id=cid, from_entry_id=history.entries[1].id, inputs="branch")
    restarted = [e async for e in restart]
    assert restarted[0].event == "conversation.response.started"


async def test_files_upload_and_download(sdk: Mistral) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    uploaded = await sdk.files.upload_async(
        file={"file_name": "data.jsonl", "content": payload}, purpose="batch")
    assert uploaded.size_bytes == len(payload)
    response = await sdk.files.download_async(file_id=uploaded.id)
    body = await response.aread()
    assert body == payload
    listed = await asyncio.to_thread(sdk.files.list)
    assert uploaded.id in [f.id for f in listed.data]
    deleted = await sdk.files.delete_async(file_id=uploaded.id)
    assert deleted.deleted


async def test_upstream_key_is_used_and_never_returned(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    client = sidecar.sdk(api_key="the-callers-own-key")
    res = await client.chat.complete_async(model=MODEL,
                                           messages=[{"role": "user", "content": "x"}])
    assert res.choices
    seen = await mock_upstream.requests()
    auth = [v for k, v in seen[-1]["headers"] if k.lower() == "authorization"]
    assert auth == [f"Bearer {MOCK_KEY}"]
