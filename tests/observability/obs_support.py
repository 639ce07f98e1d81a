"""Helpers for the observability tests: scrape and query /metrics, read JSON log files, and
drive a round of traffic that touches every metric family."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import MockUpstream, Sidecar

MODEL = "mistral-small-latest"
SECRET_MARKER = "purple-elephant-7741"
"""Put in every user message: it must never reach a log line unless content logging is on."""

ALL_EVENTS: list[list[Any]] = [
    ["ratelimit.decision", {"limit": "requests", "allowed": True, "remaining": 9,
                            "scope": "key"}],
    ["ratelimit.decision", {"limit": "tokens", "allowed": False, "remaining": 0,
                            "scope": "key"}],
    ["ratelimit.fallback", {"active": True, "reason": "ConnectionError"}, "background"],
    ["concurrency.rejected", {"scope": "global", "waited_s": 0.2}],
    ["keypool.cooldown", {"key_index": 1, "status": 429, "seconds": 5}],
    ["guard.detection", {"rule": "prompt_injection", "field": "messages[0]",
                         "mode": "block"}],
    ["auth.denied", {"status": 401, "reason": "unknown_key"}],
    ["persistence.spooled", {"records": 4}, "background"],
    ["persistence.replayed", {"records": 3}, "background"],
    ["persistence.write_failed", {"error": "OperationalError"}, "background"],
]


class Metrics:
    """A parsed /metrics page."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[Sample] = [
            s for family in text_string_to_metric_families(text) for s in family.samples]
        self.types = {family.name: family.type
                      for family in text_string_to_metric_families(text)}

    def find(self, name: str, **labels: str) -> list[Sample]:
        """Samples called ``name`` whose labels include ``labels``."""
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample matching; fails when there is none or several."""
        found = self.find(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples\n" + "\n".join(
            line for line in self.text.splitlines() if line.startswith(name))
        return float(found[0].value)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample matching (0 when none)."""
        return float(sum(s.value for s in self.find(name, **labels)))

    @property
    def names(self) -> set[str]:
        """Every sample name exposed."""
        return {s.name for s in self.samples}


async def scrape(url: str) -> Metrics:
    """GET /metrics and parse it."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Metrics(await resp.text())


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log file, parsed (fails on any line that is not a JSON object)."""
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise AssertionError(f"{path}:{number} is not JSON: {raw!r}") from exc
        assert isinstance(parsed, dict), raw
        lines.append(parsed)
    return lines


def flush_logs(sidecar: Sidecar) -> None:
    """Wait until the logs plugin's writing thread has written every line logged so far."""
    from plugins.logs import LOGS

    sidecar.app[LOGS].flush()


def sidecar_log(sidecar: Sidecar, path: Path) -> list[dict[str, Any]]:
    """The lines of the sidecar's log file so far, parsed, access lines included."""
    flush_logs(sidecar)
    return read_lines(path)


def access_lines(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The access lines among ``lines``."""
    return [line for line in lines if line.get("logger") == "mistral_sidecar.access"]


@dataclass
class Traffic:
    """What a round of traffic did, to compare metrics and logs against."""

    request_ids: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    conversation_outputs: dict[str, list[int]] = field(default_factory=dict)
    replies: list[str] = field(default_factory=list)
    resource_ids: set[str] = field(default_factory=set)
    #: Size of each error answer the sidecar itself gave, by request id.
    error_bytes: dict[str, int] = field(default_factory=dict)

    def next_id(self, label: str) -> str:
        """A fresh X-Request-ID to send (and find again in the access log)."""
        request_id = f"obs-{label}-{len(self.request_ids)}"
        self.request_ids.append(request_id)
        return request_id


def _message(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} {SECRET_MARKER}"}]


async def raw_post(sidecar: Sidecar, path: str, payload: Any, request_id: str,
                   method: str = "POST", **headers: str) -> tuple[int, dict[str, Any] | None]:
    """Send JSON with aiohttp (for headers the SDK does not send); ``(status, json)``.

    Keyword arguments are headers, ``_`` standing for ``-``."""
    sent = {"Authorization": "Bearer caller-secret-key-123", "X-Request-ID": request_id}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    async with aiohttp.ClientSession() as http, http.request(
            method, sidecar.url + path, json=payload, headers=sent) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def run_traffic(sidecar: Sidecar, mock: MockUpstream) -> Traffic:
    """Chat (plain and streamed), conversations (model and agent, plain and streamed), an
    upstream 429 that outlasts the retries, a retried 503, a rejection, a plugin's own answer
    and every plugin event. Needs the retry plugin and ``obs_fakes`` in the chain."""
    traffic = Traffic()
    client = sidecar.sdk("caller-secret-key-123")

    def headers(label: str) -> dict[str, str]:
        return {"X-Request-ID": traffic.next_id(label)}

    def count(usage: Any) -> None:
        traffic.prompt_tokens += usage.prompt_tokens
        traffic.completion_tokens += usage.completion_tokens

    for _ in range(2):
        reply = await asyncio.to_thread(
            client.chat.complete, model=MODEL, messages=_message("hello"),
            http_headers=headers("chat"))
        count(reply.usage)
        traffic.replies.append(reply.choices[0].message.content)

    def stream_chat() -> Any:
        usage = None
        with client.chat.stream(model=MODEL, messages=_message("stream"),
                                http_headers=headers("chat-stream")) as events:
            for event in events:
                if event.data.usage is not None:
                    usage = event.data.usage
        return usage

    count(await asyncio.to_thread(stream_chat))

    started = await asyncio.to_thread(
        client.beta.conversations.start, inputs=f"start {SECRET_MARKER}", model=MODEL,
        http_headers=headers("conv-start"))
    count(started.usage)
    traffic.resource_ids.add(started.conversation_id)
    traffic.conversation_outputs.setdefault("conversations.start", []).append(
        len(started.outputs))
    appended = await asyncio.to_thread(
        client.beta.conversations.append, conversation_id=started.conversation_id,
        inputs=f"more {SECRET_MARKER}", http_headers=headers("conv-append"))
    count(appended.usage)
    traffic.conversation_outputs.setdefault("conversations.append", []).append(
        len(appended.outputs))

    agent = await asyncio.to_thread(
        client.beta.agents.create, model=MODEL, name="obs-agent",
        http_headers=headers("agent-create"))
    with_agent = await asyncio.to_thread(
        client.beta.conversations.start, inputs=f"agent {SECRET_MARKER}", agent_id=agent.id,
        http_headers=headers("conv-agent"))
    count(with_agent.usage)
    traffic.resource_ids.update({agent.id, with_agent.conversation_id})
    traffic.conversation_outputs["conversations.start"].append(len(with_agent.outputs))

    def stream_conversation() -> Any:
        usage = None
        with client.beta.conversations.start_stream(
                inputs=f"streamed {SECRET_MARKER}", model=MODEL,
                http_headers=headers("conv-stream")) as events:
            for event in events:
                if getattr(event.data, "type", "") == "conversation.response.done":
                    usage = event.data.usage
        return usage

    count(await asyncio.to_thread(stream_conversation))

    # Upstream 429 on every attempt: three attempts, the caller gets the 429.
    await mock.fault(action="respond", status=429, path_prefix="/v1/chat", times=3,
                     headers={"Retry-After": "0"})
    status, _ = await raw_post(sidecar, "/v1/chat/completions",
                               {"model": MODEL, "messages": _message("limited")},
                               traffic.next_id("upstream-429"))
    assert status == 429
    # One 503, then success: two attempts.
    await mock.fault(action="respond", status=503, path_prefix="/v1/chat", times=1)
    status, body = await raw_post(sidecar, "/v1/chat/completions",
                                  {"model": MODEL, "messages": _message("retried")},
                                  traffic.next_id("retried"))
    assert status == 200 and body is not None
    traffic.prompt_tokens += body["usage"]["prompt_tokens"]
    traffic.completion_tokens += body["usage"]["completion_tokens"]
    # Rejected by a plugin, answered by a plugin, and every event.
    status, _ = await raw_post(sidecar, "/v1/chat/completions",
                               {"model": MODEL, "messages": _message("rejected")},
                               traffic.next_id("rejected"), X_Test_Reject="1")
    assert status == 429
    status, _ = await raw_post(sidecar, "/v1/chat/completions",
                               {"model": MODEL, "messages": _message("answered")},
                               traffic.next_id("answered"), X_Test_Answer="1")
    assert status == 200
    status, _ = await raw_post(sidecar, "/v1/models", None, traffic.next_id("events"),
                               method="GET", X_Test_Emit=json.dumps(ALL_EVENTS),
                               X_Test_Queued="0.05")
    assert status == 200
    return traffic
