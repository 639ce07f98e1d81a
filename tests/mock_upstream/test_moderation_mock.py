"""The mock's moderation endpoints: the documented scoring rule, the spec's shapes, faults."""

from __future__ import annotations

import time
from typing import Any

from aiohttp.test_utils import TestClient
from mistralai.client import Mistral

from proxy.mock_upstream.api_moderations import CATEGORIES

from .conftest import AUTH
from .helpers import add_fault

MODEL = "mistral-moderation-latest"


async def _moderate(http: TestClient, payload: object, path: str = "/v1/moderations") -> object:
    response = await http.post(path, json=payload, headers=AUTH)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_sdk_moderate_flags_the_trigger_category_only(sdk: Mistral) -> None:
    reply = await sdk.classifiers.moderate_async(
        model=MODEL, inputs=["a friendly question about bread",
                             "how do I flag:violence_and_threats my neighbour"])
    assert reply.model == MODEL and reply.id
    benign, flagged = reply.results
    assert set(benign.category_scores or {}) == set(CATEGORIES)
    assert not any((benign.categories or {}).values())
    assert max((benign.category_scores or {}).values()) < 0.01
    assert (flagged.category_scores or {})["violence_and_threats"] == 0.99
    assert (flagged.categories or {}) == {c: c == "violence_and_threats" for c in CATEGORIES}


async def test_exact_scores_and_determinism(http: TestClient) -> None:
    body = await _moderate(http, {"model": MODEL,
                                  "input": "FLAG:selfharm=0.42 and flag:pii=0.5 and flag:nope"})
    assert isinstance(body, dict)
    scores = body["results"][0]["category_scores"]
    assert scores["selfharm"] == 0.42 and scores["pii"] == 0.5
    categories = body["results"][0]["categories"]
    assert categories["pii"] is True and categories["selfharm"] is False
    again = await _moderate(http, {"model": MODEL,
                                   "input": ["FLAG:selfharm=0.42 and flag:pii=0.5 and flag:nope"]})
    assert isinstance(again, dict)
    assert again["results"][0]["category_scores"] == scores
    assert again["id"] != body["id"]


async def test_chat_moderation_scores_each_conversation_by_its_worst_message(
    sdk: Mistral,
) -> None:
    calm: list[Any] = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    tense: list[Any] = [{"role": "user", "content": "hello"},
             {"role": "assistant", "content": [{"type": "text", "text": "flag:sexual"}]}]
    reply = await sdk.classifiers.moderate_chat_async(model=MODEL, inputs=tense)
    assert len(reply.results) == 1
    assert (reply.results[0].categories or {})["sexual"] is True
    several = await sdk.classifiers.moderate_chat_async(model=MODEL, inputs=[calm, tense])
    assert [(r.categories or {})["sexual"] for r in several.results] == [False, True]


async def test_malformed_bodies_get_the_api_422(http: TestClient) -> None:
    for path, payload in [
        ("/v1/moderations", {"model": MODEL}),
        ("/v1/moderations", {"model": MODEL, "input": ["ok", 3]}),
        ("/v1/chat/moderations", {"model": MODEL, "input": "not a chat"}),
        ("/v1/chat/moderations", {"model": MODEL, "input": [{"content": "no role"}]}),
        ("/v1/chat/moderations", {"model": MODEL, "input": []}),
    ]:
        response = await http.post(path, json=payload, headers=AUTH)
        assert response.status == 422, (path, payload)
        assert (await response.json())["object"] == "error"


async def test_moderation_needs_a_key(http: TestClient) -> None:
    response = await http.post("/v1/moderations", json={"model": MODEL, "input": "x"})
    assert response.status == 401


async def test_faults_make_moderation_fail_or_slow(http: TestClient) -> None:
    await add_fault(http, path_prefix="/v1/moderations", action="respond", status=500)
    failed = await http.post("/v1/moderations", json={"model": MODEL, "input": "x"},
                             headers=AUTH)
    assert failed.status == 500
    await add_fault(http, path_prefix="/v1/moderations", action="delay", delay_ms=300)
    started = time.monotonic()
    await _moderate(http, {"model": MODEL, "input": "x"})
    assert time.monotonic() - started >= 0.3
    # A fault on one endpoint leaves the other, and chat, alone.
    await add_fault(http, path_prefix="/v1/moderations", action="respond", status=503)
    await _moderate(http, {"model": MODEL, "input": [[{"role": "user", "content": "x"}]]},
                    "/v1/chat/moderations")
