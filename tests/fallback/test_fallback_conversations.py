"""Conversations and agents: they keep their model unless ``SIDECAR_FALLBACK_AGENTS=true``, and
even then only on failures that prove upstream created nothing; an agent is never swapped."""

from __future__ import annotations

import pytest
from mistralai.client import errors

from tests.conftest import MockUpstream, SidecarFactory
from tests.fallback.fallback_support import (
    LARGE,
    MEDIUM,
    MODEL_HEADER,
    fallback_env,
    sdk,
    send,
    user,
)
from tests.support.event_recorder import events

CONVERSATIONS = "/v1/conversations"


async def test_a_conversation_keeps_its_model_by_default(start_sidecar: SidecarFactory,
                                                         mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env())
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    async with sdk(sidecar.url) as (client, headers):
        with pytest.raises(errors.SDKError) as caught:
            await client.beta.conversations.start_async(model=LARGE, inputs="hello")
    assert caught.value.status_code == 503
    assert headers.last[MODEL_HEADER] == LARGE
    assert events(sidecar.app, "fallback.used") == []
    records = await mock_upstream.requests()
    assert records and all(r["status"] == 503 for r in records)


async def test_configured_a_model_conversation_falls_back_on_503(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(SIDECAR_FALLBACK_AGENTS="true"))
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    async with sdk(sidecar.url) as (client, headers):
        started = await client.beta.conversations.start_async(model=LARGE, inputs="hello")
        assert headers.last[MODEL_HEADER] == MEDIUM
        assert started.outputs[0].model == MEDIUM  # type: ignore[union-attr]
        # Upstream keeps the conversation on the model that answered; later turns use it.
        kept = await client.beta.conversations.get_async(conversation_id=started.conversation_id)
        assert kept.model == MEDIUM  # type: ignore[union-attr]
        more = await client.beta.conversations.append_async(
            conversation_id=started.conversation_id, inputs="again")
    assert more.outputs[0].model == MEDIUM  # type: ignore[union-attr]
    assert [(e["from_model"], e["to_model"], e["reason"])
            for e in events(sidecar.app, "fallback.used")] == [(LARGE, MEDIUM, "http_503")]


async def test_configured_a_streamed_conversation_falls_back_before_it_starts(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(SIDECAR_FALLBACK_AGENTS="true"))
    await mock_upstream.fault(action="respond", status=429, times=-1, model=LARGE,
                              headers={"Retry-After": "60"})
    async with sdk(sidecar.url) as (client, headers):
        stream = await client.beta.conversations.start_stream_async(model=LARGE, inputs="hi")
        seen = [event.data async for event in stream]
    assert headers.last[MODEL_HEADER] == MEDIUM
    models = {getattr(data, "model", None) for data in seen} - {None}
    assert models == {MEDIUM}


async def test_a_conversation_is_not_moved_after_a_failure_upstream_may_have_acted_on(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    # A 502 may come after upstream created the conversation: another model would make a
    # second one.
    sidecar = await start_sidecar(**fallback_env(SIDECAR_FALLBACK_AGENTS="true"))
    await mock_upstream.fault(action="respond", status=502, times=-1, model=LARGE)
    reply = await send(sidecar.url, {"model": LARGE, "inputs": "hi"}, path=CONVERSATIONS)
    assert (reply.status, reply.model, reply.attempts) == (502, LARGE, 1)
    assert events(sidecar.app, "fallback.used") == []


async def test_an_agent_conversation_never_changes_model(start_sidecar: SidecarFactory,
                                                         mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(SIDECAR_FALLBACK_AGENTS="true"))
    async with sdk(sidecar.url) as (client, headers):
        agent = await client.beta.agents.create_async(model=LARGE, name="helper")
        await mock_upstream.fault(action="respond", status=503, times=-1,
                                  path_prefix=CONVERSATIONS)
        with pytest.raises(errors.SDKError) as started:
            await client.beta.conversations.start_async(agent_id=agent.id, inputs="hi")
        assert started.value.status_code == 503
        # The agent chose its model: the sidecar cannot tell which one failed.
        assert MODEL_HEADER not in headers.last

        await mock_upstream.fault(action="respond", status=503, times=-1,
                                  path_prefix="/v1/agents/completions")
        with pytest.raises(errors.SDKError) as completed:
            await client.agents.complete_async(
                agent_id=agent.id, messages=user("hi"))
        assert completed.value.status_code == 503
    assert events(sidecar.app, "fallback.used") == []
