"""/metrics after real SDK traffic: every family has the series the traffic should have made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy import __version__
from tests.conftest import MockUpstream, Sidecar, SidecarFactory
from tests.observability.obs_fakes import PLUGIN
from tests.observability.obs_support import Metrics, Traffic, run_traffic, scrape

CHAIN = f"logs,metrics,tracing,store,{PLUGIN},retry,breaker"


def obs_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of a sidecar with the observability plugins and the stand-ins."""
    env = {
        "SIDECAR_PLUGINS_CHAIN": CHAIN,
        "SIDECAR_DB_MIGRATE_ON_START": "true",
        "SIDECAR_RETRY_BASE_INTERVAL_SECONDS": "0.001",
        "SIDECAR_LOG_STDOUT": "false",
        "SIDECAR_LOG_FILE": str(tmp_path / "logs" / "sidecar.log"),
    }
    env.update(extra)
    return env


@pytest.fixture
async def after_traffic(start_sidecar: SidecarFactory, mock_upstream: MockUpstream,
                        tmp_path: Path) -> tuple[Sidecar, Traffic, Metrics]:
    """A sidecar that served one round of traffic, and its /metrics afterwards."""
    sidecar = await start_sidecar(**obs_env(tmp_path))
    traffic = await run_traffic(sidecar, mock_upstream)
    return sidecar, traffic, await scrape(sidecar.url)


async def test_requests_durations_and_attempts(after_traffic: tuple[Sidecar, Traffic, Metrics]
                                               ) -> None:
    _, _, m = after_traffic
    chat = {"operation": "chat.complete", "method": "POST"}
    # two plain, one stream, one retried, one answered by a plugin
    assert m.value("mistral_sidecar_requests_total", **chat, status="200") == 5
    # upstream's 429 after three attempts, and one rejected by a plugin
    assert m.value("mistral_sidecar_requests_total", **chat, status="429") == 2
    assert m.value("mistral_sidecar_requests_total", operation="conversations.start",
                   method="POST", status="200") == 2
    assert m.value("mistral_sidecar_requests_total", operation="conversations.append",
                   method="POST", status="200") == 1
    assert m.value("mistral_sidecar_requests_total", operation="conversations.start_stream",
                   method="POST", status="200") == 1
    assert m.value("mistral_sidecar_requests_total", operation="models.list", method="GET",
                   status="200") == 1
    assert m.value("mistral_sidecar_request_duration_seconds_count",
                   operation="chat.complete", stream="false") == 6
    assert m.value("mistral_sidecar_request_duration_seconds_count",
                   operation="chat.complete", stream="true") == 1
    assert m.value("mistral_sidecar_request_duration_seconds_bucket",
                   operation="chat.complete", stream="false", le="+Inf") == 6
    # the rejected and the answered request never went upstream
    assert m.value("mistral_sidecar_upstream_duration_seconds_count",
                   operation="chat.complete") == 5
    assert m.value("mistral_sidecar_upstream_attempts_total", operation="chat.complete") == 8
    assert m.value("mistral_sidecar_retries_total", reason="http_429") == 2
    assert m.value("mistral_sidecar_retries_total", reason="http_503") == 1
    assert m.value("mistral_sidecar_errors_total", operation="chat.complete",
                   code="rate_limited") == 1
    assert m.value("mistral_sidecar_requests_in_flight") == 0
    assert m.types["mistral_sidecar_request_duration_seconds"] == "histogram"
    assert m.value("mistral_sidecar_build_info", version=__version__,
                   environment="development") == 1


async def test_tokens_streams_and_conversations(after_traffic: tuple[Sidecar, Traffic, Metrics]
                                                ) -> None:
    _, traffic, m = after_traffic
    assert m.total("mistral_sidecar_tokens_total", kind="prompt") == traffic.prompt_tokens > 0
    assert m.total("mistral_sidecar_tokens_total", kind="completion") == \
        traffic.completion_tokens > 0
    assert m.value("mistral_sidecar_tokens_total", model="mistral-small-latest",
                   kind="prompt") > 0
    for operation in ("chat.complete", "conversations.start_stream"):
        assert m.value("mistral_sidecar_time_to_first_token_seconds_count",
                       operation=operation, model="mistral-small-latest") == 1
        assert m.value("mistral_sidecar_stream_output_tokens_per_second_count",
                       operation=operation, model="mistral-small-latest") == 1
        ttft = m.value("mistral_sidecar_time_to_first_token_seconds_sum",
                       operation=operation, model="mistral-small-latest")
        assert 0 < ttft < 5
    assert m.value("mistral_sidecar_conversations_started_total", target="model") == 2
    assert m.value("mistral_sidecar_conversations_started_total", target="agent") == 1
    starts = traffic.conversation_outputs["conversations.start"]
    assert m.value("mistral_sidecar_conversation_entries_count",
                   operation="conversations.start") == len(starts) == 2
    assert m.value("mistral_sidecar_conversation_entries_sum",
                   operation="conversations.start") == sum(starts)
    assert m.value("mistral_sidecar_conversation_entries_sum",
                   operation="conversations.append") == \
        sum(traffic.conversation_outputs["conversations.append"])
    assert m.value("mistral_sidecar_conversation_duration_seconds_count",
                   operation="conversations.append") == 1


async def test_plugin_events_are_counted(after_traffic: tuple[Sidecar, Traffic, Metrics]
                                         ) -> None:
    _, _, m = after_traffic
    assert m.value("mistral_sidecar_events_total", event="retry.attempt") == 3
    assert m.value("mistral_sidecar_events_total", event="ratelimit.decision") == 2
    assert m.value("mistral_sidecar_ratelimit_decisions_total", limit="requests",
                   decision="allowed", scope="key") == 1
    assert m.value("mistral_sidecar_ratelimit_decisions_total", limit="tokens",
                   decision="rejected", scope="key") == 1
    assert m.value("mistral_sidecar_ratelimit_fallbacks_total") == 1
    assert m.value("mistral_sidecar_concurrency_rejections_total", scope="global") == 1
    assert m.value("mistral_sidecar_queue_wait_seconds_count", outcome="rejected") == 1
    assert m.value("mistral_sidecar_queue_wait_seconds_sum", outcome="rejected") == 0.2
    assert m.value("mistral_sidecar_queue_wait_seconds_count", outcome="admitted") == 1
    assert m.value("mistral_sidecar_queue_wait_seconds_bucket", outcome="admitted",
                   le="0.05") == 1
    assert m.value("mistral_sidecar_keypool_cooldowns_total", key_index="1",
                   status="429") == 1
    assert m.value("mistral_sidecar_guard_detections_total", rule="prompt_injection",
                   mode="block") == 1
    assert m.value("mistral_sidecar_auth_denials_total", status="401",
                   reason="unknown_key") == 1
    assert m.value("mistral_sidecar_persistence_spooled_records_total") == 4
    assert m.value("mistral_sidecar_persistence_replayed_records_total") == 3
    assert m.value("mistral_sidecar_events_total", event="persistence.write_failed") == 1


async def test_plugin_gauges_and_dependency_health(
        after_traffic: tuple[Sidecar, Traffic, Metrics]) -> None:
    _, _, m = after_traffic
    assert m.value("mistral_sidecar_persistence_queue_depth") == 3
    assert m.value("mistral_sidecar_persistence_spool_bytes") == 2048
    assert m.value("mistral_sidecar_persistence_lag_seconds") == 1.5
    assert m.value("mistral_sidecar_concurrency_queue_depth", scope="global") == 2
    assert m.types["mistral_sidecar_persistence_queue_depth"] == "gauge"
    # a running total is exposed as a counter; entries that would clash or are invalid are not
    assert m.value("mistral_sidecar_persistence_write_failures_total") == 2
    assert m.types["mistral_sidecar_persistence_write_failures"] == "counter"
    assert m.total("mistral_sidecar_requests_total") < 1000
    assert not [n for n in m.names if "bad" in n]
    # the real breaker and retry plugins' gauges
    assert m.value("mistral_sidecar_breaker_state", state="closed") == 1
    assert m.value("mistral_sidecar_breaker_state", state="open") == 0
    assert m.value("mistral_sidecar_retry_active_requests") == 0
    # readiness: the real SQLite store answers, the stand-in Redis does not
    assert m.value("mistral_sidecar_dependency_up", dependency="database") == 1
    assert m.value("mistral_sidecar_dependency_up", dependency="redis") == 0
    assert m.value("mistral_sidecar_dependency_latency_seconds", dependency="redis") == 0.002
    assert m.value("mistral_sidecar_ready") == 0


async def test_labels_stay_bounded(after_traffic: tuple[Sidecar, Traffic, Metrics]) -> None:
    _, traffic, m = after_traffic
    allowed = {"operation", "method", "status", "model", "kind", "code", "event", "limit",
               "decision", "scope", "reason", "from_state", "to_state", "state", "key_index",
               "rule", "mode", "target", "outcome", "dependency", "version", "environment", "le",
               "stream"}
    assert len(traffic.resource_ids) == 3
    forbidden = traffic.resource_ids | set(traffic.request_ids)
    id_like = re.compile(r"^/|[0-9a-f]{16,}")
    for sample in m.samples:
        assert set(sample.labels) <= allowed, sample
        for value in sample.labels.values():
            assert value not in forbidden and not id_like.search(value), sample
    assert "mistral_sidecar_tokens_total" in m.names
    assert all("owner" not in s.labels for s in m.find("mistral_sidecar_tokens_total"))


async def test_owner_label_when_configured(start_sidecar: SidecarFactory,
                                           mock_upstream: MockUpstream,
                                           tmp_path: Path) -> None:
    sidecar = await start_sidecar(**obs_env(tmp_path, SIDECAR_METRICS_OWNER_LABEL="true"))
    from tests.observability.obs_support import MODEL, raw_post

    for owner in ("team-a", "team-b", "team-b"):
        status, _ = await raw_post(
            sidecar, "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            f"owner-{owner}", X_Test_Owner=owner)
        assert status == 200
    m = await scrape(sidecar.url)
    a = m.value("mistral_sidecar_tokens_total", model=MODEL, kind="completion", owner="team-a")
    b = m.value("mistral_sidecar_tokens_total", model=MODEL, kind="completion", owner="team-b")
    assert a > 0 and b == 2 * a
