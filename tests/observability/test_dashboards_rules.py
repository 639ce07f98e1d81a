"""docker/: Prometheus config and alert rules are valid and fire when they should; the Grafana
dashboard's queries parse; alerts and dashboard name only metrics the sidecar exposes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import MOCK_KEY, REPO, MockUpstream, SidecarFactory
from tests.observability.obs_fakes import PLUGIN
from tests.observability.obs_support import ALL_EVENTS, MODEL, raw_post, scrape

PROMETHEUS = REPO / "docker" / "prometheus"
GRAFANA = REPO / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mistral-sidecar.json"
PROMTOOL = shutil.which("promtool")
DEFAULT_CHAIN = ("logs,metrics,tracing,store,auth,validate,guard,ratelimit,concurrency,"
                 "persistence,retry,breaker,keypool,via")
METRIC_RE = re.compile(r"\b(mistral_sidecar_[a-zA-Z0-9_]+)")
#: Grafana's variables, replaced by values Prometheus accepts.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$job": ".*", "$instance": ".*"}


def _alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _dashboard_exprs() -> list[str]:
    data = _dashboard()
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", ())]
    exprs += [a["expr"] for a in data["annotations"]["list"] if "expr" in a]
    return exprs


def _grafana_free(expr: str) -> str:
    for variable, value in GRAFANA_VARS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def _promtool(*args: str, cwd: Path | None = None) -> str:
    assert PROMTOOL is not None, (
        "promtool is needed to check the rules and dashboards: apt-get install prometheus "
        "(bash .ci/test installs it)")
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_prometheus_config_and_rules_are_valid() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    job = config["scrape_configs"][0]
    assert (job["job_name"], job["metrics_path"]) == ("mistral-sidecar", "/metrics")
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names)
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
    out = _promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_required_alerts_are_there() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    wanted = {
        "MistralSidecarCircuitBreakerOpen": "mistral_sidecar_breaker_state",
        "MistralSidecarHighErrorRatio": "mistral_sidecar_requests_total",
        "MistralSidecarHighLatencyP99": "mistral_sidecar_request_duration_seconds_bucket",
        "MistralSidecarPersistenceLag": "mistral_sidecar_persistence_lag_seconds",
        "MistralSidecarSpoolNotEmpty": "mistral_sidecar_persistence_spool_bytes",
        "MistralSidecarPersistenceWriteFailures":
            "mistral_sidecar_persistence_write_failures_total",
        "MistralSidecarRateLimiterFallback": "mistral_sidecar_ratelimit_fallback_active",
    }
    for alert, metric in wanted.items():
        assert metric in exprs[alert]


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    """One input series of a promtool rule test, on instance ``a`` of the sidecar job."""
    labels = {"job": "mistral-sidecar", "instance": "a", **labels}
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def _fires(at: str, alert: str, severity: str = "warning", **labels: str) -> dict[str, Any]:
    expected = {"severity": severity, "job": "mistral-sidecar", **labels}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": expected}]}


def _silent(at: str, alert: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def _alert_unit_tests(rules: Path) -> dict[str, Any]:
    """Synthetic series for each alert, and when each must (not) fire."""
    chat = {"operation": "chat.complete"}
    latency = "mistral_sidecar_request_duration_seconds_bucket"
    inputs = [
        _series("mistral_sidecar_breaker_state", "0 0 1 1 1 1 1 1", state="open"),
        _series("mistral_sidecar_requests_total", "0+60x60", **chat, method="POST",
                status="200"),
        _series("mistral_sidecar_requests_total", "0+10x60", **chat, method="POST",
                status="502"),
        _series(latency, "0+1x60", **chat, stream="false", le="30.0"),
        _series(latency, "0+10x60", **chat, stream="false", le="60.0"),
        _series(latency, "0+10x60", **chat, stream="false", le="+Inf"),
        _series("mistral_sidecar_persistence_lag_seconds", "120x60"),
        _series("mistral_sidecar_persistence_spool_bytes", "4096x60"),
        _series("mistral_sidecar_persistence_database_writable", "1x20 0x40"),
        _series("mistral_sidecar_ratelimit_fallback_active", "0 1 0 0"),
        _series("mistral_sidecar_persistence_write_failures_total", "0 0 3 3"),
        _series("mistral_sidecar_dependency_up", "0x20", dependency="redis"),
        _series("up", "0x20"),
    ]
    checks = [
        _fires("1m", "MistralSidecarCircuitBreakerOpen", "critical", instance="a"),
        _fires("15m", "MistralSidecarHighErrorRatio"),
        _fires("15m", "MistralSidecarHighLatencyP99"),
        _fires("10m", "MistralSidecarPersistenceLag", instance="a"),
        # the spool holds records while the database is writable: normal write-ahead use
        _silent("4m", "MistralSidecarSpoolNotEmpty"),
        _silent("7m", "MistralSidecarSpoolNotEmpty"),
        _fires("8m", "MistralSidecarSpoolNotEmpty", instance="a"),
        _fires("1m", "MistralSidecarRateLimiterFallback", instance="a"),
        _fires("1m", "MistralSidecarPersistenceWriteFailures", instance="a"),
        _fires("3m", "MistralSidecarDependencyDown", instance="a", dependency="redis"),
        _fires("3m", "MistralSidecarDown", "critical", instance="a"),
        _silent("1m", "MistralSidecarDown"),
    ]
    return {"rule_files": [str(rules)], "evaluation_interval": "15s",
            "tests": [{"interval": "15s", "input_series": inputs,
                       "alert_rule_test": checks}]}


def test_alerts_fire_on_the_conditions_they_describe(tmp_path: Path) -> None:
    # The same rules without their annotations: promtool would compare the rendered text.
    data = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(data))
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(yaml.safe_dump(_alert_unit_tests(rules)))
    assert "SUCCESS" in _promtool("test", "rules", str(tests))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = [_grafana_free(expr) for expr in _dashboard_exprs()]
    assert len(exprs) > 40
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in _promtool("check", "rules", str(path))


def test_dashboard_and_provisioning_fit_together() -> None:
    data = _dashboard()
    ids = [p["id"] for p in data["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", ()):
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance"}
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
                            .read_text())["datasources"][0]
    assert (source["type"], source["uid"]) == ("prometheus", "prometheus")
    assert variables["datasource"]["current"]["value"] == source["uid"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "mistral-sidecar.yml")
                              .read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in \
        compose["services"]["prometheus"]["volumes"]


def _referenced() -> set[str]:
    names: set[str] = set()
    for expr in [rule["expr"] for rule in _alert_rules()] + _dashboard_exprs():
        names.update(METRIC_RE.findall(expr))
    for variable in _dashboard()["templating"]["list"]:
        names.update(METRIC_RE.findall(variable.get("definition", "")))
    return names


async def test_every_metric_named_is_exposed_by_the_default_chain(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    sidecar = await start_sidecar(
        **redis_env, SIDECAR_PLUGINS_CHAIN=f"{DEFAULT_CHAIN},{PLUGIN}",
        SIDECAR_DB_MIGRATE_ON_START="true",
        SIDECAR_AUTH_MODE="passthrough", SIDECAR_LOG_STDOUT="false",
        SIDECAR_LOG_FILE=str(tmp_path / "sidecar.log"), SIDECAR_METRICS_OWNER_LABEL="true")
    client = sidecar.sdk(MOCK_KEY)
    messages = [{"role": "user", "content": "hello"}]
    await asyncio.to_thread(client.chat.complete, model=MODEL, messages=messages)

    def stream() -> None:
        with client.chat.stream(model=MODEL, messages=messages) as events:
            for _ in events:
                pass

    await asyncio.to_thread(stream)
    await asyncio.to_thread(client.beta.conversations.start, inputs="hi", model=MODEL)
    await mock_upstream.fault(action="respond", status=503, path_prefix="/v1/chat", times=1)
    await asyncio.to_thread(client.chat.complete, model=MODEL, messages=messages)
    events = [*ALL_EVENTS, ["breaker.transition", {"from_state": "closed", "to_state": "open"}],
              ["breaker.rejected", {"state": "open"}]]
    status, _ = await raw_post(sidecar, "/v1/models", None, "events", method="GET",
                               Authorization=f"Bearer {MOCK_KEY}", X_Test_Emit=json.dumps(events))
    assert status == 200
    metrics = await scrape(sidecar.url)

    exposed = set(metrics.names)
    for family, kind in metrics.types.items():
        exposed.update({"counter": [family + "_total"],
                        "histogram": [family + "_bucket", family + "_count", family + "_sum"],
                        }.get(kind, [family]))
    missing = sorted(_referenced() - exposed)
    assert not missing, f"named in docker/ but not exposed: {missing}"
    # the default chain's own plugins report what the alerts rely on
    assert metrics.find("mistral_sidecar_breaker_state", state="closed")
    assert metrics.find("mistral_sidecar_persistence_spool_bytes")
    assert metrics.find("mistral_sidecar_ratelimit_fallback_active")
    assert metrics.value("mistral_sidecar_dependency_up", dependency="database") == 1
    # the rate limiter is ready, and so is the Redis behind it
    assert metrics.value("mistral_sidecar_dependency_up", dependency="ratelimit") == 1
    assert metrics.value("mistral_sidecar_dependency_up", dependency="redis") == 1
    assert metrics.value("mistral_sidecar_dependency_latency_seconds", dependency="redis") > 0
