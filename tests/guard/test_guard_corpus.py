"""The guard against its corpus: obfuscated attacks never reach upstream, benign text does.

``tests/guard/corpus/attacks.jsonl`` holds obfuscated prompt-injection and system-prompt
exfiltration attempts (ten languages; look-alike letters, joiners, variation selectors,
fillers, combining marks, separators, tag characters, ...; in every field issue #18 found
unscanned, and split across two messages, chunks or entries). ``benign.jsonl`` holds
ordinary prompts in several languages, code, technical English about instructions and HTML or
JavaScript questions. Each record goes through a real sidecar in front of the mock upstream,
whose received bodies are recorded by a middleware added to it here: in block mode no attempt
may reach the mock at all; in redact mode none of an attempt's obfuscated phrases may be in
what it received. At most 1 % of the benign records may be flagged, and the others must reach
the mock byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.mock_upstream import MockConfig, create_mock_app
from tests.conftest import MOCK_KEY, MockUpstream, Sidecar, SidecarFactory
from tests.guard.corpus import make_corpus
from tests.guard.corpus_bodies import request_for, strings

CORPUS = Path(__file__).resolve().parent / "corpus"
RECEIVED = web.AppKey("corpus_received", list)
R = "[REDACTED]"


def _load(name: str) -> list[dict[str, Any]]:
    with (CORPUS / name).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


ATTACKS = _load("attacks.jsonl")
BENIGN = _load("benign.jsonl")


@web.middleware
async def _record_body(request: web.Request, handler: Any) -> web.StreamResponse:
    request.app[RECEIVED].append(await request.read())
    response: web.StreamResponse = await handler(request)
    return response


@pytest.fixture
async def mock_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> MockUpstream:
    """The mock upstream, also keeping every body it receives."""
    app = create_mock_app(MockConfig(api_keys=frozenset({MOCK_KEY})))
    app[RECEIVED] = []
    app.middlewares.append(_record_body)
    server = await aiohttp_server(app)
    return MockUpstream(url=str(server.make_url("")).rstrip("/"), server=server)


async def _send(http: aiohttp.ClientSession, sidecar: Sidecar, record: dict[str, Any]
                ) -> tuple[int, dict[str, Any], bytes]:
    method, path, body = request_for(record)
    raw = json.dumps(body, ensure_ascii=False).encode()
    async with http.request(method, sidecar.url + path, data=raw,
                            headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json(content_type=None), raw


def test_the_corpus_files_are_what_the_generator_writes() -> None:
    assert make_corpus.main(["--check"]) == 0, "python -m tests.guard.corpus.make_corpus"


def test_the_corpus_is_big_and_varied_enough() -> None:
    assert len(ATTACKS) >= 200 and len(BENIGN) >= 200
    assert {a["lang"] for a in ATTACKS} >= {"en", "fr", "de", "es", "ru", "zh"}
    assert {a["class"] for a in ATTACKS} >= {
        "cyrillic_lookalikes", "greek_lookalikes", "zero_width_joiners", "variation_selectors",
        "combining_grapheme_joiner", "fillers_as_spaces", "combining_marks", "separators"}
    places = {a["place"] for a in ATTACKS}
    assert {p for p in places if p.startswith("split.")} >= {"split.messages", "split.chunks"}
    assert places >= {
        "chat.tool_call_arguments", "conversations.start.function_call_arguments",
        "chat.tool_description", "conversations.start.tool_description",
        "agents.create.tool_description", "chat.name", "conversations.start.name",
        "conversations.start.description", "agents.create.name", "agents.create.metadata",
        "conversations.append.instructions", "batch.inline_chat"}
    assert {b["lang"] for b in BENIGN} >= {"fr", "de", "ru", "zh", "ar", "code", "en"}
    assert {b["kind"] for b in BENIGN} >= {"technical", "web", "code", "conversation"}


async def test_no_attempt_reaches_upstream_in_block_or_redact_mode(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    received: list[bytes] = mock_upstream.server.app[RECEIVED]
    blocker = await start_sidecar(SIDECAR_PLUGINS_CHAIN="validate,guard",
                                  SIDECAR_GUARD_MODE="block")
    redactor = await start_sidecar(SIDECAR_PLUGINS_CHAIN="validate,guard",
                                   SIDECAR_GUARD_MODE="redact")
    blocked, redacted, problems = 0, 0, []
    async with aiohttp.ClientSession() as http:
        for record in ATTACKS:
            _, _, body = request_for(record)
            sent = strings(body)
            assert all(any(p in s for s in sent) for p in record["phrases"]), record["id"]

            before = len(received)
            status, answer, _ = await _send(http, blocker, record)
            if (status == 400 and answer.get("code") == "input_guard_blocked"
                    and len(received) == before):
                blocked += 1
            else:
                problems.append(f"block {record['id']}: {status} {answer}")

            before = len(received)
            await _send(http, redactor, record)
            arrived = [s for raw in received[before:] for s in strings(json.loads(raw))]
            leaked = [p for p in record["phrases"] if any(p in s for s in arrived)]
            if arrived and not leaked and any(R in s for s in arrived):
                redacted += 1
            else:
                problems.append(f"redact {record['id']}: leaked {leaked!r} "
                                f"({len(received) - before} bodies upstream)")
    print(f"\ncorpus: {blocked}/{len(ATTACKS)} attempts blocked, "
          f"{redacted}/{len(ATTACKS)} redacted")
    assert problems == []
    assert blocked == redacted == len(ATTACKS)


async def test_benign_texts_pass_unflagged_and_unchanged(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    received: list[bytes] = mock_upstream.server.app[RECEIVED]
    blocker = await start_sidecar(SIDECAR_PLUGINS_CHAIN="validate,guard",
                                  SIDECAR_GUARD_MODE="block")
    redactor = await start_sidecar(SIDECAR_PLUGINS_CHAIN="validate,guard",
                                   SIDECAR_GUARD_MODE="redact")
    flagged: list[str] = []
    changed: list[str] = []
    async with aiohttp.ClientSession() as http:
        for record in BENIGN:
            status, answer, _ = await _send(http, blocker, record)
            if status == 400 and answer.get("code") == "input_guard_blocked":
                flagged.append(f"{record['id']}: {answer['message']}")
                continue
            before = len(received)
            _, _, raw = await _send(http, redactor, record)
            if received[before:] != [raw]:
                changed.append(record["id"])
    print(f"\ncorpus: {len(flagged)}/{len(BENIGN)} benign texts flagged")
    assert len(flagged) <= len(BENIGN) // 100, flagged
    assert changed == []
