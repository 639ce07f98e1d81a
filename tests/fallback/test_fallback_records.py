"""What a fallback leaves behind: metrics, the usage log and the caller's token budget are
those of the model that answered, and the switch itself is counted."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.estimate import estimate_tokens
from tests.conftest import MockUpstream, SidecarFactory, wait_for
from tests.fallback.fallback_support import LARGE, MEDIUM, chat, fallback_env, sdk, send, user
from tests.observability.obs_support import scrape
from tests.persistence.persistence_helpers import StoreReader, persist_env


async def test_metrics_count_the_fallback_and_the_answering_models_tokens(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(SIDECAR_PLUGINS_CHAIN="metrics,fallback,retry"))
    await mock_upstream.fault(action="respond", status=503, times=2, model=LARGE)
    async with sdk(sidecar.url) as (client, _):
        answer = await client.chat.complete_async(
            model=LARGE, messages=user("one two three"))
        stream = await client.chat.stream_async(
            model=LARGE, messages=user("four"))
        streamed = [event.data async for event in stream]
    m = await scrape(sidecar.url)
    assert m.value("mistral_sidecar_fallbacks_total", from_model=LARGE, to_model=MEDIUM) == 1
    assert m.value("mistral_sidecar_events_total", event="fallback.used") == 1
    assert answer.usage is not None and streamed[-1].usage is not None
    assert m.value("mistral_sidecar_tokens_total", model=MEDIUM, kind="prompt") == \
        answer.usage.prompt_tokens
    # The second request found the large model healthy again: its tokens are its own.
    assert m.value("mistral_sidecar_tokens_total", model=LARGE, kind="completion") == \
        streamed[-1].usage.completion_tokens


async def test_the_usage_log_names_the_model_that_answered(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path) -> None:
    env = persist_env({"SIDECAR_SERVER_DATA_DIR": str(tmp_path / "store")})
    # The chain is ours, whatever name the helper sets it under.
    env = {name: value for name,
           value in env.items() if not name.startswith("SIDECAR_PLUGINS_CHAIN")}
    env["SIDECAR_PLUGINS_CHAIN"] = "store,persistence,fallback,retry"
    sidecar = await start_sidecar(**fallback_env(**env))
    db = StoreReader(sidecar.env)
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    async with sdk(sidecar.url) as (client, _):
        answer = await client.chat.complete_async(
            model=LARGE, messages=user("count me"))
        stream = await client.chat.stream_async(
            model=LARGE, messages=user("me too"))
        streamed = [event.data async for event in stream]
    rows = await wait_for(lambda: len(r := db.rows(
        "SELECT * FROM usage_log ORDER BY created_at")) == 2 and r)
    assert [(r["model"], r["status"], r["streamed"]) for r in rows] == [
        (MEDIUM, 200, False), (MEDIUM, 200, True)]
    assert answer.usage is not None and streamed[-1].usage is not None
    assert [r["total_tokens"] for r in rows] == [
        answer.usage.total_tokens, streamed[-1].usage.total_tokens]


async def test_the_token_budget_is_charged_for_the_answer_that_came_back(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(**fallback_env(
        SIDECAR_PLUGINS_CHAIN="ratelimit,fallback,retry", RATE_LIMIT_REQUESTS="100",
        SIDECAR_RATELIMIT_TOKENS_PER_MINUTE="1000"))
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    first = await send(sidecar.url, chat(LARGE, "one two three four"))
    assert (first.status, first.model) == (200, MEDIUM)
    used = first.body["usage"]["total_tokens"]
    second_body = chat(MEDIUM)
    second = await send(sidecar.url, second_body)
    # One request counted however many models were tried; the tokens are the fallback's
    # (and the second request's own prompt estimate, taken when it was admitted).
    held, _ = estimate_tokens(len(json.dumps(second_body).encode()), 0, 0)
    assert second.headers["RateLimit"].startswith('"default";r=98;')
    assert f'"tokens";r={1000 - used - held};' in second.headers["RateLimit"]
