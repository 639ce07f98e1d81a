"""With SIDECAR_CLOUDWATCH_EMF=true, SDK traffic through a sidecar process comes out on its
standard output as CloudWatch Embedded Metric Format lines: every one valid by the
specification, the same series as Datadog gets, beside the JSON log lines."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable

import jsonschema

from proxy import __version__
from tests.conftest import MockUpstream, SidecarProcess
from tests.metrics_push.push_support import (
    EMBED_MODEL,
    EMF_SCHEMA,
    MODEL,
    PRICES_ENV,
    by_operation,
    emf_documents,
    emf_problems,
    emf_totals,
    raw_embeddings,
    sdk_traffic,
)

#: More embeddings than one EMF line may carry values of one metric.
MANY = 120


async def test_every_emf_line_is_valid_and_adds_up_to_the_traffic(
        spawn_sidecar: Callable[..., SidecarProcess], mock_upstream: MockUpstream) -> None:
    # One interval, sent at shutdown: everything arrives in one batch of lines.
    sidecar = await asyncio.to_thread(
        spawn_sidecar, SIDECAR_PLUGINS_CHAIN="prices,logs,metrics_push",
        MISTRAL_BASE_URL=mock_upstream.url, SIDECAR_CLOUDWATCH_EMF="true",
        SIDECAR_CLOUDWATCH_NAMESPACE="Acme/Sidecar", ENVIRONMENT="staging",
        SIDECAR_METRICS_PUSH_FLUSH_SECONDS="3600", SIDECAR_PRICES_OVERRIDES=PRICES_ENV)
    traffic = await sdk_traffic(sidecar.url, mock_upstream)
    await raw_embeddings(sidecar.url, MANY, traffic)
    await asyncio.sleep(0.2)
    assert emf_documents(sidecar.output()) == []  # nothing is written per request

    sidecar.signal(signal.SIGTERM)
    assert await asyncio.to_thread(sidecar.proc.wait, 20) == 0
    output = sidecar.output()
    documents = emf_documents(output)
    assert documents

    validator = jsonschema.Draft202012Validator(EMF_SCHEMA)
    for document in documents:
        errors = [error.message for error in validator.iter_errors(document)]
        assert not errors and not emf_problems(document), (errors, emf_problems(document))
        line = json.dumps(document)
        assert len(line.encode()) < 256 * 1024
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Acme/Sidecar"
        (dimensions,) = directive["Dimensions"]
        assert dimensions[:2] == ["service", "env"]
        assert document["service"] == "mistral-sidecar" and document["env"] == "staging"
        # The version is searchable but no dimension (a new metric per release would cost).
        assert document["version"] == __version__ and "version" not in dimensions

    # The same series as Datadog gets, adding up to the traffic.
    assert by_operation(documents, "mistral.api.requests") == traffic.requests
    latencies = by_operation(documents, "mistral.api.latency")
    assert {op: len(emf_totals(documents, "mistral.api.latency", operation=op))
            for op in latencies} == traffic.requests
    assert sum(emf_totals(documents, "mistral.api.errors", status_class="4xx",
                          error_code="upstream_400")) == 1
    for model in (MODEL, EMBED_MODEL):
        assert sum(emf_totals(documents, "mistral.tokens.prompt", model=model)) == \
            traffic.prompt_tokens[model]
        assert sum(emf_totals(documents, "mistral.tokens.completion", model=model)) == \
            traffic.completion_tokens[model]
        assert abs(sum(emf_totals(documents, "mistral.cost", model=model, currency="USD"))
                   - traffic.cost(model)) < 1e-9
    assert emf_totals(documents, "mistral.conversation", agent_id=traffic.agent_id,
                      operation="conversations.history") == [traffic.history_entries]
    assert sum(emf_totals(documents, "mistral.conversation.entries",
                          agent_id=traffic.agent_id)) == sum(traffic.run_outputs.values())

    # The embeddings' latencies do not fit one line: they continue on the next, with the
    # same dimensions, while the count stays on the first.
    embeddings = [d for d in documents if d.get("operation") == "embeddings.create"
                  and d.get("status_class") == "2xx"]
    assert [len(d["mistral.api.latency"]) for d in embeddings] == [100, MANY + 1 - 100]
    assert ["mistral.api.requests" in d for d in embeddings] == [True, False]

    # The JSON log lines are still there, and the EMF lines are not among them.
    logs = [json.loads(line) for line in output.splitlines()
            if line.startswith("{") and '"_aws"' not in line]
    assert logs and all("_aws" not in json.dumps(line) for line in logs)
