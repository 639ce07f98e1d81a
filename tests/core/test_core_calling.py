"""One calling convention for every hook: an implementation gets the arguments it declares,
whatever it declares of them, and nothing else."""

from __future__ import annotations

import aiohttp

from tests.conftest import SidecarFactory
from tests.core.calling_plugins import few_arguments

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "one two"}]}


async def test_implementations_taking_some_arguments_positionally_or_with_defaults_run(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.core.calling_plugins:buffering,"
                                                  "tests.core.calling_plugins:few_arguments")
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=CHAT
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        # positional-only ctx, and a parameter with a default the core leaves at its default
        assert resp.headers["X-Marker"] == "default"
        assert resp.headers["X-On-Response"] == "seen"
    assert body["rewritten_by"] == "few_arguments"


async def test_a_stream_observer_taking_only_the_event_sees_every_event(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.core.calling_plugins:few_arguments")
    few_arguments.events.clear()
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert len(few_arguments.events) == text.count("data:") > 1
    assert few_arguments.events[-1] == "[DONE]"
