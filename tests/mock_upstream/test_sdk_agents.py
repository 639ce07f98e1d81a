"""The real SDK against the mock: the agents API and its versions."""

from __future__ import annotations

import asyncio

import pytest
from mistralai.client import Mistral, errors


async def test_agent_lifecycle_with_versions(sdk: Mistral) -> None:
    agent = await sdk.beta.agents.create_async(
        model="mistral-small-latest", name="helper", instructions="be nice"
    )
    assert agent.id.startswith("ag_")
    assert (agent.version, agent.versions) == (0, [0])

    fetched = await asyncio.to_thread(sdk.beta.agents.get, agent_id=agent.id)
    assert fetched.name == "helper" and fetched.instructions == "be nice"

    updated = await sdk.beta.agents.update_async(agent_id=agent.id, instructions="be terse")
    assert (updated.version, updated.versions) == (1, [0, 1])
    assert updated.instructions == "be terse" and updated.name == "helper"
    again = await asyncio.to_thread(sdk.beta.agents.update, agent_id=agent.id, description="second")
    assert again.version == 2

    versions = await sdk.beta.agents.list_versions_async(agent_id=agent.id)
    assert [v.version for v in versions] == [2, 1, 0]
    first = await sdk.beta.agents.get_version_async(agent_id=agent.id, version="0")
    assert first.instructions == "be nice"

    rolled_back = await sdk.beta.agents.update_version_async(agent_id=agent.id, version=0)
    assert rolled_back.version == 0
    current = await sdk.beta.agents.get_async(agent_id=agent.id)
    assert current.instructions == "be nice"

    await sdk.beta.agents.delete_async(agent_id=agent.id)
    with pytest.raises(errors.SDKError) as caught:
        await sdk.beta.agents.get_async(agent_id=agent.id)
    assert caught.value.status_code == 404


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_agents_list_is_paginated_newest_first(sdk: Mistral) -> None:
    for index in range(5):
        await sdk.beta.agents.create_async(model="mistral-small-latest", name=f"agent-{index}")

    first_page = await sdk.beta.agents.list_async(page=0, page_size=2)
    last_page = await asyncio.to_thread(sdk.beta.agents.list, page=2, page_size=2)
    assert [a.name for a in first_page] == ["agent-4", "agent-3"]
    assert [a.name for a in last_page] == ["agent-0"]

    named = await sdk.beta.agents.list_async(name="agent-2")
    assert [a.name for a in named] == ["agent-2"]


async def test_agents_pages_follow_next_page_token(sdk: Mistral) -> None:
    for index in range(3):
        await sdk.beta.agents.create_async(model="mistral-small-latest", name=f"p-{index}")

    page = await sdk.beta.agents.list_pages_async(page_size=2)
    names = [a.name for a in page.result.data]
    assert page.result.next_page_token
    following = await sdk.beta.agents.list_pages_async(
        page_size=2, page_token=page.result.next_page_token
    )
    names += [a.name for a in following.result.data]
    assert names == ["p-2", "p-1", "p-0"]
    assert following.result.next_page_token is None


async def test_agent_completions_answer_as_the_agent(sdk: Mistral) -> None:
    agent = await sdk.beta.agents.create_async(model="mistral-large-latest", name="helper")
    messages = [{"role": "user", "content": "ping"}]
    answer = await sdk.agents.complete_async(agent_id=agent.id, messages=messages)
    assert answer.model == "mistral-large-latest"
    assert answer.choices[0].message.content == "Echo: ping"
    chunks = [event.data async for event in
              await sdk.agents.stream_async(agent_id=agent.id, messages=messages)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: ping"
    with pytest.raises(errors.SDKError) as caught:
        await sdk.agents.complete_async(agent_id="ag_unknown", messages=messages)
    assert caught.value.status_code == 404
