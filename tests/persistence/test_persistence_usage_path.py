"""Model calls get their usage record on a shorter path than other recorded requests; it
makes the very record the general capture makes of the same request."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import aiohttp

from plugins.persistence import exchange_from, usage_from_context
from plugins.persistence.capture import MODEL_CALLS, records_for
from tests.conftest import SidecarFactory
from tests.observability.obs_contexts import CONTEXTS
from tests.observability.obs_contexts import PLUGIN as CONTEXTS_PLUGIN
from tests.persistence.persistence_helpers import MODEL, persist_env
from tests.persistence.spool_witness import PLUGIN as WITNESS_PLUGIN
from tests.persistence.spool_witness import WITNESSED


async def test_model_calls_short_path_makes_the_general_record(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    env = persist_env({})
    sidecar = await start_sidecar(**{**env, "SIDECAR_PLUGINS_CHAIN":
                                     f"{env['SIDECAR_PLUGINS_CHAIN']},{CONTEXTS_PLUGIN}"})
    calls = [
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user",
                                                               "content": "hi"}]}),
        ("/v1/chat/completions", {"model": MODEL, "stream": True,
                                  "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/fim/completions", {"model": "codestral-latest", "prompt": "def f(",
                                 "suffix": "return 1"}),
        ("/v1/embeddings", {"model": "mistral-embed", "input": ["one", "two"]}),
    ]
    async with aiohttp.ClientSession() as http:
        for path, payload in calls:
            async with http.post(sidecar.url + path, json=payload) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
    model_calls = [ctx for ctx in sidecar.app[CONTEXTS] if ctx.operation_name in MODEL_CALLS]
    assert sorted((ctx.operation_name, ctx.is_stream) for ctx in model_calls) == [
        ("chat.complete", False), ("chat.complete", True), ("embeddings.create", False),
        ("fim.complete", False)]
    for ctx in model_calls:
        model = ctx.response_json["model"]
        short = usage_from_context(ctx, "record-1", model)
        (general,) = records_for(exchange_from(ctx, "record-1"))
        assert short.kind == general.kind
        short_time = datetime.fromisoformat(short.data.pop("created_at"))
        general_time = datetime.fromisoformat(general.data.pop("created_at"))
        assert abs((short_time - general_time).total_seconds()) < 1
        assert short.data == general.data, ctx.operation_name
        assert short.data["prompt_tokens"] > 0 and short.data["model"] == model


async def test_an_answer_leaves_only_once_its_record_is_in_the_spool(
        start_sidecar: SidecarFactory) -> None:
    # Records stay in the spool (no batch is due); a plugin after persistence finds each
    # request's record in the spool file before the answer leaves, for concurrent requests.
    env = persist_env({}, SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS="60",
                      SIDECAR_PERSISTENCE_BATCH_SIZE="100000")
    sidecar = await start_sidecar(**{**env, "SIDECAR_PLUGINS_CHAIN":
                                     f"{env['SIDECAR_PLUGINS_CHAIN']},{WITNESS_PLUGIN}"})
    async with aiohttp.ClientSession() as http:
        async def call(request_id: str) -> None:
            async with http.post(sidecar.url + "/v1/chat/completions",
                                 json={"model": MODEL, "messages": [{"role": "user",
                                                                      "content": "hi"}]},
                                 headers={"X-Request-ID": request_id}) as resp:
                assert resp.status == 200
                await resp.read()

        ids = [f"spooled-{round_}-{n}" for round_ in range(3) for n in range(8)]
        for round_ in range(3):
            await asyncio.gather(*(call(i) for i in ids[round_ * 8:(round_ + 1) * 8]))
    assert sidecar.app[WITNESSED] == dict.fromkeys(ids, True)
