"""The mock upstream's faults aimed at one model (``"model"`` in ``POST /__mock__/faults``),
which the fallback tests rely on: only requests whose JSON body names that model meet them."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import MOCK_KEY, MockUpstream

AUTH = {"Authorization": f"Bearer {MOCK_KEY}"}


async def _post(url: str, path: str, payload: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url + path, json=payload,
                                                          headers=AUTH) as response:
        return response.status, await response.json()


async def test_a_fault_for_one_model_leaves_the_others_alone(
        mock_upstream: MockUpstream) -> None:
    fault = await mock_upstream.fault(action="respond", status=503, times=2,
                                      model="mistral-large-latest")
    assert fault["fault"]["model"] == "mistral-large-latest"
    url = mock_upstream.url
    large = {"model": "mistral-large-latest", "messages": [{"role": "user", "content": "a"}]}
    small = {**large, "model": "mistral-small-latest"}
    status, body = await _post(url, "/v1/chat/completions", small)
    # The body was read to look at the model, and is still whole for the answer.
    assert (status, body["model"], body["choices"][0]["message"]["content"]) == (
        200, "mistral-small-latest", "Echo: a")
    assert (await _post(url, "/v1/chat/completions", large))[0] == 503
    # Any path: an embeddings request naming the model meets it too.
    status, _ = await _post(url, "/v1/embeddings",
                            {"model": "mistral-large-latest", "input": ["x"]})
    assert status == 503
    # Used up.
    assert (await _post(url, "/v1/chat/completions", large))[0] == 200
    records = await mock_upstream.requests()
    assert [r["fault"] == fault["id"] for r in records] == [False, True, True, False]


async def test_a_model_fault_never_matches_a_body_without_that_model(
        mock_upstream: MockUpstream) -> None:
    await mock_upstream.fault(action="respond", status=503, times=-1, model="m")
    url = mock_upstream.url
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/models", headers=AUTH) as listed:
            assert listed.status == 200
        async with http.post(url + "/v1/chat/completions", data=b"{not json",
                             headers={**AUTH, "Content-Type": "application/json"}) as broken:
            assert broken.status == 422
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", b'{"model": "m"}\n', filename="a.jsonl")
        async with http.post(url + "/v1/files", data=form, headers=AUTH) as uploaded:
            assert uploaded.status == 200


async def test_a_model_must_be_a_non_empty_string(mock_upstream: MockUpstream) -> None:
    async with aiohttp.ClientSession() as http:
        for bad in ("", 3):
            async with http.post(mock_upstream.url + "/__mock__/faults",
                                 json={"action": "respond", "model": bad}) as response:
                assert response.status == 400
                assert "model" in (await response.json())["error"]
