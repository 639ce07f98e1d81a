"""Receivers for the metrics_push tests (a Datadog HTTP intake, a DogStatsD socket), the EMF
specification as JSON Schema, and a round of SDK traffic with what it must add up to."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import MockUpstream

MODEL = "mistral-small-latest"
EMBED_MODEL = "mistral-embed"
DATADOG_KEY = "dd-api-key-0123456789abcdef"
CALLER_KEY = "caller-key-never-in-metrics"
#: Prices per million tokens (input, output), so that costs are known exactly.
PRICES = {MODEL: (2.0, 6.0), EMBED_MODEL: (0.5, 0.0)}
PRICES_ENV = json.dumps({model: {"input": i, "output": o} for model, (i, o) in PRICES.items()})


def tag_dict(tags: list[str]) -> dict[str, str]:
    """``["k:v", ...]`` as a dict (a value may hold colons)."""
    return dict(tag.split(":", 1) for tag in tags)


# --- what a round of SDK traffic did ---------------------------------------------------------


@dataclass
class Traffic:
    """What the SDK saw, to compare the pushed series against."""

    requests: Counter[str] = field(default_factory=Counter)
    prompt_tokens: Counter[str] = field(default_factory=Counter)
    completion_tokens: Counter[str] = field(default_factory=Counter)
    total_tokens: Counter[str] = field(default_factory=Counter)
    agent_id: str = ""
    #: Output entries of each conversation run with the agent, and the history's length.
    run_outputs: dict[str, int] = field(default_factory=dict)
    history_entries: int = 0
    errors: int = 0

    def used(self, model: str, usage: Any) -> None:
        """Count one answer's usage."""
        self.prompt_tokens[model] += usage.prompt_tokens
        self.completion_tokens[model] += usage.completion_tokens or 0
        self.total_tokens[model] += usage.total_tokens

    def cost(self, model: str) -> float:
        """What the model's tokens cost at :data:`PRICES`."""
        input_price, output_price = PRICES[model]
        return (self.prompt_tokens[model] * input_price
                + self.completion_tokens[model] * output_price) / 1e6


async def sdk_traffic(url: str, mock: MockUpstream) -> Traffic:
    """Chat (twice, once streamed), embeddings, an agent's conversation (start, append, its
    history) through the real ``mistralai`` SDK, and a chat that upstream answers with 400."""
    from mistralai.client import Mistral

    client = Mistral(api_key=CALLER_KEY, server_url=url)
    traffic = Traffic()
    messages: Any = [{"role": "user", "content": "hello there"}]

    for _ in range(2):
        reply = await asyncio.to_thread(client.chat.complete, model=MODEL, messages=messages)
        traffic.used(MODEL, reply.usage)
        traffic.requests["chat.complete"] += 1

    def stream() -> Any:
        usage = None
        with client.chat.stream(model=MODEL, messages=messages) as events:
            for event in events:
                usage = event.data.usage or usage
        return usage

    traffic.used(MODEL, await asyncio.to_thread(stream))
    traffic.requests["chat.complete"] += 1

    embedded = await asyncio.to_thread(client.embeddings.create, model=EMBED_MODEL,
                                       inputs=["one", "two"])
    traffic.used(EMBED_MODEL, embedded.usage)
    traffic.requests["embeddings.create"] += 1

    agent = await asyncio.to_thread(client.beta.agents.create, model=MODEL, name="push-agent")
    traffic.requests["agents.create"] += 1
    traffic.agent_id = agent.id
    started = await asyncio.to_thread(client.beta.conversations.start, agent_id=agent.id,
                                      inputs="start")
    traffic.used(MODEL, started.usage)
    traffic.requests["conversations.start"] += 1
    traffic.run_outputs["conversations.start"] = len(started.outputs)
    appended = await asyncio.to_thread(client.beta.conversations.append,
                                       conversation_id=started.conversation_id, inputs="more")
    traffic.used(MODEL, appended.usage)
    traffic.requests["conversations.append"] += 1
    traffic.run_outputs["conversations.append"] = len(appended.outputs)
    history = await asyncio.to_thread(client.beta.conversations.get_history,
                                      conversation_id=started.conversation_id)
    traffic.requests["conversations.history"] += 1
    traffic.history_entries = len(history.entries)

    await mock.fault(action="respond", status=400, path_prefix="/v1/chat", times=1)
    try:
        await asyncio.to_thread(client.chat.complete, model=MODEL, messages=messages)
    except Exception as error:  # the SDK raises on a 400: that is the point
        assert "400" in str(error)
    else:
        raise AssertionError("the 400 fault did not reach the caller")
    traffic.requests["chat.complete"] += 1
    traffic.errors += 1
    return traffic


async def raw_embeddings(url: str, count: int, traffic: Traffic) -> None:
    """``count`` embeddings requests with aiohttp, ten at a time, counted in ``traffic``."""
    async with aiohttp.ClientSession() as http:
        async def one() -> None:
            async with http.post(url + "/v1/embeddings",
                                 json={"model": EMBED_MODEL, "input": ["x"]},
                                 headers={"Authorization": f"Bearer {CALLER_KEY}"}) as resp:
                assert resp.status == 200, await resp.text()
                usage = (await resp.json())["usage"]
            traffic.requests["embeddings.create"] += 1
            traffic.prompt_tokens[EMBED_MODEL] += usage["prompt_tokens"]
            traffic.completion_tokens[EMBED_MODEL] += usage.get("completion_tokens") or 0
            traffic.total_tokens[EMBED_MODEL] += usage["total_tokens"]

        for start in range(0, count, 10):
            await asyncio.gather(*(one() for _ in range(min(10, count - start))))


# --- a Datadog HTTP intake -------------------------------------------------------------------


class DatadogIntake:
    """Datadog's metric intake as the sidecar sees it: ``/api/v1/series`` and
    ``/api/v1/distribution_points``; keeps every payload and its headers."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def app(self) -> web.Application:
        """The receiving application."""
        app = web.Application()
        app.router.add_post("/api/v1/series", self._receive)
        app.router.add_post("/api/v1/distribution_points", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        # aiohttp inflates a deflate-encoded body on reading.
        payload = json.loads(await request.read())
        self.posts.append((request.path, dict(request.headers), payload))
        return web.json_response({"status": "ok"}, status=202)

    def series(self, path: str = "/api/v1/series") -> list[dict[str, Any]]:
        """Every series entry posted to ``path``."""
        return [entry for posted, _headers, payload in self.posts if posted == path
                for entry in payload["series"]]

    def total(self, metric: str, **tags: str) -> float:
        """Sum of the points of ``metric`` whose tags include ``tags``."""
        return sum(point[1] for entry in self.series() if entry["metric"] == metric
                   and tags.items() <= tag_dict(entry["tags"]).items()
                   for point in entry["points"])

    def distribution(self, metric: str, **tags: str) -> list[float]:
        """Every value of distribution ``metric`` whose tags include ``tags``."""
        return [value for entry in self.series("/api/v1/distribution_points")
                if entry["metric"] == metric
                and tags.items() <= tag_dict(entry["tags"]).items()
                for point in entry["points"] for value in point[1]]


# --- a DogStatsD receiver --------------------------------------------------------------------


class DogStatsdReceiver(asyncio.DatagramProtocol):
    """A UDP socket in the Agent's place; parses every DogStatsD line it receives."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Keep each metric line of the datagram."""
        self.lines.extend(line for line in data.decode().split("\n") if line)

    def metrics(self) -> list[tuple[str, float, str, dict[str, str]]]:
        """``(name, value, type, tags)`` of every metric line (``name:value|type|#tags``)."""
        parsed = []
        for line in self.lines:
            head, *fields = line.split("|")
            name, value = head.rsplit(":", 1)
            tags = next((tag_dict(f[1:].split(",")) for f in fields if f.startswith("#")), {})
            parsed.append((name, float(value), fields[0], tags))
        return parsed

    def total(self, name: str, kind: str, **tags: str) -> float:
        """Sum of the values of ``name`` sent as ``kind`` with ``tags``."""
        return sum(value for n, value, k, t in self.metrics()
                   if n == name and k == kind and tags.items() <= t.items())

    def values(self, name: str, kind: str, **tags: str) -> list[float]:
        """Every value of ``name`` sent as ``kind`` with ``tags``."""
        return [value for n, value, k, t in self.metrics()
                if n == name and k == kind and tags.items() <= t.items()]


# --- the EMF specification -------------------------------------------------------------------

#: CloudWatch's metric units (MetricDatum.Unit), the only ones a MetricDefinition may name.
UNITS = ["Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
         "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
         "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
         "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
         "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"]

#: The embedded metric format document, as the specification defines it: the root node with
#: its ``_aws`` metadata object, MetricDirectives, DimensionSets and MetricDefinitions.
EMF_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Root Node",
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "title": "Metadata",
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "LogGroupName": {"type": "string", "minLength": 1},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "title": "MetricDirective",
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1,
                                          "maxLength": 1024},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "title": "DimensionSet",
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1,
                                              "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "title": "MetricDefinition",
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1,
                                                 "maxLength": 1024},
                                        "Unit": {"type": "string", "enum": UNITS},
                                        "StorageResolution": {"type": "integer",
                                                              "enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def emf_problems(document: dict[str, Any]) -> list[str]:
    """What the specification requires beyond the schema: every dimension key and metric
    name a directive references is a member of the root node, a dimension's value is a
    string of at most 1024 characters, a metric's value a number or at most 100 numbers."""
    problems = []
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                value = document.get(key)
                if not isinstance(value, str) or not 0 < len(value) <= 1024:
                    problems.append(f"dimension {key}: {value!r} is no string of 1-1024 chars")
        for definition in directive["Metrics"]:
            name = definition["Name"]
            value = document.get(name)
            numbers = value if isinstance(value, list) else [value]
            if not numbers or len(numbers) > 100 or not all(
                    isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
                problems.append(f"metric {name}: {value!r} is no number or 1-100 numbers")
    return problems


def emf_documents(output: str) -> list[dict[str, Any]]:
    """The EMF documents among a process's output lines: each must be a bare JSON object."""
    documents = []
    for line in output.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        assert isinstance(document, dict) and "_aws" in document, line
        documents.append(document)
    return documents


def emf_totals(documents: list[dict[str, Any]], metric: str, **dimensions: str) -> list[float]:
    """Every value of ``metric`` in documents whose dimensions include ``dimensions``."""
    values: list[float] = []
    for document in documents:
        if metric in document and all(document.get(k) == v for k, v in dimensions.items()):
            value = document[metric]
            values.extend(value if isinstance(value, list) else [value])
    return values


def by_operation(documents: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Sum of ``metric`` by the ``operation`` dimension."""
    sums: dict[str, float] = defaultdict(float)
    for document in documents:
        if metric in document:
            value = document[metric]
            sums[document["operation"]] += sum(value) if isinstance(value, list) else value
    return dict(sums)
