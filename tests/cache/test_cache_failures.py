"""Only complete successes are stored: upstream errors, cut streams and failed
generations go through uncached."""

from __future__ import annotations

from cache_support import CHAT, chat, create_key, start_cached, upstream_calls

from tests.conftest import MockUpstream, SidecarFactory


async def test_upstream_errors_are_never_cached(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    for status in (500, 503, 429):
        await mock_upstream.fault(path_prefix="/v1/chat", times=1, action="respond", status=status)
        failed = await chat(sidecar, alice)
        assert failed.status == status, failed.text
        assert failed.headers["X-Sidecar-Cache"] == "miss"
    # A 200 that is an error in disguise (a failed generation) is not kept either.
    await mock_upstream.fault(path_prefix="/v1/chat", times=1, action="respond", status=200, body={
        "id": "broken", "object": "chat.completion", "model": "mistral-small-latest",
        "created": 1, "choices": [{"index": 0, "finish_reason": "error",
                                   "message": {"role": "assistant", "content": "Ech"}}]})
    assert (await chat(sidecar, alice)).body["id"] == "broken"
    good = await chat(sidecar, alice)
    assert good.status == 200 and good.headers["X-Sidecar-Cache"] == "miss"
    assert good.body["choices"][0]["finish_reason"] == "stop"
    hit = await chat(sidecar, alice)
    assert hit.headers["X-Sidecar-Cache"] == "hit" and hit.text == good.text
    assert await upstream_calls(mock_upstream) == 5


async def test_a_cut_stream_is_never_cached(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(start_sidecar)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    client = sidecar.sdk(alice.key)
    await mock_upstream.fault(path_prefix="/v1/chat", times=1, action="cut_stream",
                              after_frames=2)
    request = {"model": "mistral-small-latest", "temperature": 0,
               "messages": CHAT["messages"]}
    cut: str | None = None
    try:
        stream = await client.chat.stream_async(**request)
        cut = "".join([str(event.data.choices[0].delta.content or "")
                       async for event in stream])
    except Exception:  # the SDK may raise on the cut connection, or just end early
        pass
    whole = "".join([str(event.data.choices[0].delta.content or "")
                     async for event in await client.chat.stream_async(**request)])
    assert whole == "Echo: what is a cache" and cut != whole
    assert await upstream_calls(mock_upstream) == 2
    # The complete one is kept.
    again = "".join([str(event.data.choices[0].delta.content or "")
                     async for event in await client.chat.stream_async(**request)])
    assert again == whole
    assert await upstream_calls(mock_upstream) == 2


async def test_an_answer_from_a_fallback_model_is_not_kept(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(
        start_sidecar, chain="store,auth,cache,plugins.fallback",
        SIDECAR_FALLBACK_MODELS='{"mistral-small-latest": ["mistral-tiny-latest"]}')
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    await mock_upstream.fault(path_prefix="/v1/chat", times=1, action="respond", status=503)
    degraded = await chat(sidecar, alice)
    assert degraded.status == 200, degraded.text
    assert degraded.body["model"] == "mistral-tiny-latest"
    # The model asked for answers now, and only its answer is kept.
    fresh = await chat(sidecar, alice)
    assert fresh.headers["X-Sidecar-Cache"] == "miss"
    assert fresh.body["model"] == "mistral-small-latest"
    kept = await chat(sidecar, alice)
    assert kept.headers["X-Sidecar-Cache"] == "hit" and kept.text == fresh.text
    # The refused call, the fallback's, the fresh one.
    assert await upstream_calls(mock_upstream) == 3
