"""Label values that come from upstream answers or callers' bodies cannot break /metrics:
the exposition always parses with prometheus_client's own parser, every label value is made
of a safe charset, and a label's distinct values stay bounded."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MockUpstream, SidecarFactory

SAFE = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,100}$")
#: Model names a broken or hostile upstream (or caller) may put in a body.
HOSTILE_MODELS = [
    "line\nbreak",
    'quote"} 1\nmistral_sidecar_fake_total 99',
    "back\\slash\\",
    "nul\x00esc\x1bdel\x7f",
    "lone\ud800surrogate",
    "carriage\rreturn\ttab",
    "separator\u2028next\x85",
    "spa ce, comma=equals{brace}",
    "ünïcödé-模型",
    "x" * 5000,
    "",
]


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "cmpl-hostile", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def _chat(model: str, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


async def _scrape(url: str) -> tuple[str, dict[tuple[str, str], set[str]]]:
    """The exposition, and each (sample, label)'s distinct values; fails if it does not
    parse or a label value is outside the safe charset."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                assert SAFE.match(value), f"{sample.name}{{{name}={value!r}}}"
                values[sample.name, name].add(value)
    return text, values


async def test_hostile_model_names_from_upstream_keep_metrics_parseable(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics",
                                  SIDECAR_METRICS_FLUSH_SECONDS="0")
    async with aiohttp.ClientSession() as http:
        for model in HOSTILE_MODELS:
            await mock_upstream.fault(action="respond", status=200, path_prefix="/v1/chat",
                                      body=_completion(model), times=1)
            async with http.post(sidecar.url + "/v1/chat/completions",
                                 json=_chat("mistral-small-latest")) as resp:
                assert resp.status == 200
                assert (await resp.json())["model"] == model  # callers still see upstream's

    text, values = await _scrape(sidecar.url)
    assert "mistral_sidecar_fake_total" not in {
        s.name for f in text_string_to_metric_families(text) for s in f.samples}
    tokens = [s for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "mistral_sidecar_tokens_total" and s.labels["kind"] == "prompt"]
    # Every answer's tokens are counted, none lost to a label that could not be written.
    assert sum(s.value for s in tokens) == 3 * len(HOSTILE_MODELS)
    assert {"line_break", "back_slash_", "other"} <= values["mistral_sidecar_tokens_total",
                                                            "model"]


async def test_callers_cannot_grow_model_labels_without_bound(
        start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="metrics",
                                  SIDECAR_METRICS_FLUSH_SECONDS="0")
    async with aiohttp.ClientSession() as http:
        for n in range(130):
            stream = n % 2 == 1
            async with http.post(sidecar.url + "/v1/chat/completions",
                                 json=_chat(f'm{n}"\n{{x="1"}}\x01', stream=stream)) as resp:
                assert resp.status == 200
                await resp.read()

    _text, values = await _scrape(sidecar.url)
    for sample in ("mistral_sidecar_tokens_total",
                   "mistral_sidecar_time_to_first_token_seconds_count"):
        models = values[sample, "model"]
        assert "other" in models and len(models) <= 101, (sample, len(models))
    # The first ones keep a readable (escaped) name.
    assert "m0___x__1___" in values["mistral_sidecar_tokens_total", "model"]
