"""Which requests the cache answers: temperature, the caller's Cache-Control, streams,
FIM and embeddings, through raw HTTP and the real SDK."""

from __future__ import annotations

from typing import Any

from cache_support import CHAT, chat, create_key, start_cached, upstream_calls

from plugins.cache import CACHE
from plugins.cache.memory import MemoryBackend
from tests.conftest import MockUpstream, SidecarFactory


async def test_sampled_requests_are_not_cached_unless_the_caller_asks(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    warm = {**CHAT, "temperature": 0.7}
    unset = {key: value for key, value in CHAT.items() if key != "temperature"}
    for body in (warm, warm, unset, unset):
        reply = await chat(sidecar, alice, body)
        assert reply.status == 200 and reply.headers["X-Sidecar-Cache"] == "miss"
    assert await upstream_calls(mock_upstream) == 4

    # Asked for explicitly, a sampled answer is kept and given again.
    forced = {"X-Sidecar-Cache": "force"}
    first = await chat(sidecar, alice, warm, forced)
    assert first.headers["X-Sidecar-Cache"] == "miss"
    again = await chat(sidecar, alice, warm, forced)
    assert again.headers["X-Sidecar-Cache"] == "hit" and again.text == first.text
    # max-age opts in too, and accepts that fresh an answer.
    aged = await chat(sidecar, alice, warm, {"Cache-Control": "max-age=3600"})
    assert aged.headers["X-Sidecar-Cache"] == "hit" and aged.text == first.text
    # Without asking, the same sampled request still goes upstream.
    assert (await chat(sidecar, alice, warm)).headers["X-Sidecar-Cache"] == "miss"
    assert await upstream_calls(mock_upstream) == 6


async def test_the_callers_cache_control_skips_the_lookup_or_the_store(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    # no-store: answered, never kept.
    unkept = await chat(sidecar, alice, headers={"Cache-Control": "no-store"})
    assert unkept.status == 200
    first = await chat(sidecar, alice)
    assert first.headers["X-Sidecar-Cache"] == "miss"
    assert await upstream_calls(mock_upstream) == 2
    # no-cache: a fresh answer, which then replaces the stored one.
    fresh = await chat(sidecar, alice, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["X-Sidecar-Cache"] == "miss" and fresh.body["id"] != first.body["id"]
    assert await upstream_calls(mock_upstream) == 3
    stored = await chat(sidecar, alice)
    assert stored.headers["X-Sidecar-Cache"] == "hit" and stored.body["id"] == fresh.body["id"]
    bypass = await chat(sidecar, alice, headers={"X-Sidecar-Cache": "bypass"})
    assert bypass.headers["X-Sidecar-Cache"] == "miss"
    assert (await chat(sidecar, alice)).body["id"] == fresh.body["id"]
    assert await upstream_calls(mock_upstream) == 4


async def _stream_text(client: Any, **request: Any) -> tuple[str, Any, list[Any]]:
    stream = await client.chat.stream_async(**request)
    chunks = [event.data async for event in stream]
    text = "".join(str(chunk.choices[0].delta.content or "") for chunk in chunks)
    return text, chunks[-1], chunks


async def test_a_streamed_request_is_answered_from_the_cache_as_a_stream(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    client = sidecar.sdk(alice.key)
    request = {"model": "mistral-small-latest", "temperature": 0,
               "messages": [{"role": "user", "content": "stream me a cached answer"}]}

    text, last, chunks = await _stream_text(client, **request)
    assert text == "Echo: stream me a cached answer"
    assert await upstream_calls(mock_upstream) == 1
    again, again_last, _ = await _stream_text(client, **request)
    assert again == text
    assert again_last.choices[0].finish_reason == "stop"
    assert again_last.usage == last.usage
    assert again_last.id == chunks[0].id
    assert await upstream_calls(mock_upstream) == 1

    # Raw HTTP (the SDK's body has fields of its own: another key): an event stream,
    # marked as a hit.
    raw = {**request, "stream": True}
    assert (await chat(sidecar, alice, raw)).headers["X-Sidecar-Cache"] == "miss"
    reply = await chat(sidecar, alice, raw)
    assert reply.headers["X-Sidecar-Cache"] == "hit"
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.text.endswith("data: [DONE]\n\n")
    assert await upstream_calls(mock_upstream) == 2

    # An answer stored from a stream is not handed out as JSON: JSON answers may be
    # rewritten (redacted) on their way, streams never are.
    plain = await client.chat.complete_async(**request)
    assert plain.choices[0].message.content == text
    assert await upstream_calls(mock_upstream) == 3
    # That JSON answer now serves both kinds of request.
    assert (await client.chat.complete_async(**request)).id == plain.id
    streamed, _, chunks = await _stream_text(client, **request)
    assert streamed == text and chunks[0].id == plain.id
    assert await upstream_calls(mock_upstream) == 3


async def test_fim_and_embeddings_are_cached_through_the_sdk(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    client = sidecar.sdk(alice.key)
    fim = {"model": "codestral-latest", "prompt": "def add(a, b):", "suffix": "return c",
           "temperature": 0}
    first = await client.fim.complete_async(**fim)
    assert (await client.fim.complete_async(**fim)).id == first.id
    assert await upstream_calls(mock_upstream, "/v1/fim/completions") == 1

    # Embeddings do not sample: cached without a temperature.
    vectors = await client.embeddings.create_async(model="mistral-embed",
                                                   inputs=["alpha", "beta"])
    again = await client.embeddings.create_async(model="mistral-embed",
                                                 inputs=["alpha", "beta"])
    assert again.data[0].embedding == vectors.data[0].embedding
    assert again.id == vectors.id
    assert await upstream_calls(mock_upstream, "/v1/embeddings") == 1
    other = await client.embeddings.create_async(model="mistral-embed", inputs=["gamma"])
    assert other.id != vectors.id
    assert await upstream_calls(mock_upstream, "/v1/embeddings") == 2


async def test_only_the_listed_operations_and_keys_use_the_cache(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar, SIDECAR_CACHE_OPERATIONS="embeddings.create")
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    for _ in range(2):
        reply = await chat(sidecar, alice)
        assert reply.status == 200 and "X-Sidecar-Cache" not in reply.headers
    assert await upstream_calls(mock_upstream) == 2


async def test_cache_keys_opts_in_single_keys(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    # A first sidecar prepares the store the keys live in.
    prepared = await start_cached(start_sidecar)
    alice = await create_key(prepared.env, "alice", "user", "acme")
    bob = await create_key(prepared.env, "bob", "user", "acme")
    sidecar = await start_cached(start_sidecar, SIDECAR_CACHE_KEYS=alice.key_id)
    for _ in range(2):
        assert "X-Sidecar-Cache" not in (await chat(sidecar, bob)).headers
    assert (await chat(sidecar, alice)).headers["X-Sidecar-Cache"] == "miss"
    assert (await chat(sidecar, alice)).headers["X-Sidecar-Cache"] == "hit"
    assert await upstream_calls(mock_upstream) == 3


async def test_answers_age_and_expire(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar, SIDECAR_CACHE_TTL_SECONDS="300")
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    stored = await chat(sidecar, alice)
    state = sidecar.app[CACHE]
    assert isinstance(state.backend, MemoryBackend)
    # Move both clocks 100 s on: the wall clock ages entries, the monotonic one expires them.
    wall, monotonic = state.wall, state.backend.clock
    state.wall = lambda: wall() + 100
    state.backend.clock = lambda: monotonic() + 100
    aged = await chat(sidecar, alice)
    assert aged.headers["X-Sidecar-Cache"] == "hit" and aged.text == stored.text
    assert 100 <= int(aged.headers["Age"]) <= 102
    # Too old for this caller: a fresh answer, which replaces the stored one.
    fresh = await chat(sidecar, alice, headers={"Cache-Control": "max-age=60"})
    assert fresh.headers["X-Sidecar-Cache"] == "miss" and fresh.body["id"] != stored.body["id"]
    assert (await chat(sidecar, alice)).body["id"] == fresh.body["id"]
    # Past its time to live, an answer is gone.
    state.backend.clock = lambda: monotonic() + 100 + 301
    expired = await chat(sidecar, alice)
    assert expired.headers["X-Sidecar-Cache"] == "miss"
    assert await upstream_calls(mock_upstream) == 3
