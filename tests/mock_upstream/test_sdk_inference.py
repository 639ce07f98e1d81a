"""The real SDK against the mock: models, chat, FIM and embeddings, sync and async."""

from __future__ import annotations

import asyncio
import math

import pytest
from mistralai.client import Mistral, errors

from proxy.mock_upstream import MockConfig

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is the answer"},
]


async def test_models_list_and_get(sdk: Mistral) -> None:
    listed = await sdk.models.list_async()
    ids = {card.id for card in listed.data or []}
    assert {
        "mistral-small-latest",
        "mistral-large-latest",
        "codestral-latest",
        "mistral-embed",
    } <= ids

    card = await asyncio.to_thread(sdk.models.retrieve, model_id="codestral-latest")
    assert card.id == "codestral-latest"
    assert card.capabilities.completion_fim is True


async def test_unknown_model_is_a_404(sdk: Mistral) -> None:
    with pytest.raises(errors.SDKError) as caught:
        await sdk.models.retrieve_async(model_id="no-such-model")
    assert caught.value.status_code == 404


async def test_chat_complete_echoes_last_user_message_with_word_usage(sdk: Mistral) -> None:
    response = await asyncio.to_thread(
        sdk.chat.complete, model="mistral-small-latest", messages=MESSAGES
    )
    choice = response.choices[0]
    assert choice.message is not None
    assert choice.message.content == "Echo: what is the answer"
    assert choice.finish_reason == "stop"
    assert response.model == "mistral-small-latest"
    # Words: "be brief what is the answer" -> 6 prompt, "Echo: what is the answer" -> 5.
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (6, 5)
    assert response.usage.total_tokens == 11


async def test_chat_max_tokens_truncates_with_length_finish(sdk: Mistral) -> None:
    response = await sdk.chat.complete_async(
        model="mistral-small-latest", messages=MESSAGES, max_tokens=2
    )
    assert response.choices[0].message.content == "Echo: what"  # type: ignore[union-attr]
    assert response.choices[0].finish_reason == "length"


async def test_async_chat_stream_matches_json_answer(sdk: Mistral) -> None:
    complete = await sdk.chat.complete_async(model="mistral-small-latest", messages=MESSAGES)
    stream = await sdk.chat.stream_async(model="mistral-small-latest", messages=MESSAGES)
    chunks = [event.data async for event in stream]

    content_chunks = chunks[1:]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(content_chunks) == 8  # MockConfig.stream_tokens default
    text = "".join(str(c.choices[0].delta.content) for c in content_chunks)
    assert text == complete.choices[0].message.content  # type: ignore[union-attr]
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert content_chunks[-1].usage == complete.usage
    assert all(c.usage is None for c in chunks[:-1])


async def test_sync_chat_stream_in_a_thread(sdk: Mistral) -> None:
    def consume() -> str:
        with sdk.chat.stream(model="mistral-large-latest", messages=MESSAGES) as stream:
            return "".join(str(e.data.choices[0].delta.content) for e in stream)

    assert await asyncio.to_thread(consume) == "Echo: what is the answer"


@pytest.mark.parametrize("mock_config", [MockConfig(stream_tokens=3)])
async def test_stream_tokens_sets_the_number_of_content_frames(sdk: Mistral) -> None:
    stream = await sdk.chat.stream_async(model="mistral-small-latest", messages=MESSAGES)
    chunks = [event.data async for event in stream]
    assert len(chunks) == 1 + 3


async def test_fim_complete_and_stream(sdk: Mistral) -> None:
    complete = await sdk.fim.complete_async(
        model="codestral-latest", prompt="def add(a, b):", suffix="return c"
    )
    assert complete.choices[0].message.content == "Echo: def add(a, b):"  # type: ignore[union-attr]
    assert complete.usage.prompt_tokens == 5
    assert complete.usage.completion_tokens == 4

    def consume() -> tuple[str, object]:
        with sdk.fim.stream(
            model="codestral-latest", prompt="def add(a, b):", suffix="return c"
        ) as stream:
            events = [e.data for e in stream]
        return "".join(str(e.choices[0].delta.content) for e in events[1:]), events[-1].usage

    text, usage = await asyncio.to_thread(consume)
    assert text == complete.choices[0].message.content  # type: ignore[union-attr]
    assert usage == complete.usage


async def test_embeddings_are_deterministic_unit_vectors(sdk: Mistral) -> None:
    first = await sdk.embeddings.create_async(model="mistral-embed", inputs=["alpha beta", "gamma"])
    again = await asyncio.to_thread(sdk.embeddings.create, model="mistral-embed", inputs="gamma")
    vectors = [d.embedding or [] for d in first.data]
    assert [len(v) for v in vectors] == [1024, 1024]
    assert math.isclose(math.fsum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)
    assert vectors[0] != vectors[1]
    assert again.data[0].embedding == vectors[1]
    assert first.usage.prompt_tokens == 3
    assert [d.index for d in first.data] == [0, 1]
