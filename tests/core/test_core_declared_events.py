"""Events are declared by the plugins that emit them: an undeclared one fails loudly, a
declared one reaches the metrics it names with the level it names, and the built-in plugins'
declarations keep the levels and metric families operators rely on."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from proxy.app import create_app
from proxy.event_registry import EventSpec, UndeclaredEvent
from proxy.events import emit, event_level, registry
from proxy.loader import load
from proxy.settings import ConfigError
from tests.conftest import REPO, SidecarFactory, free_port
from tests.core.declared_event_plugins import PLUGIN
from tests.observability.obs_support import scrape

CHAIN = "SIDECAR_PLUGINS_CHAIN"


def _serve(chain: str) -> subprocess.CompletedProcess[str]:
    """``mistral-sidecar serve`` with ``chain``, expected to stop at start-up."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_"))}
    env = {**clean, CHAIN: chain, "MISTRAL_API_KEY": "k", "SIDECAR_SERVER_PORT": str(free_port()),
           "MISTRAL_BASE_URL": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "proxy.cli", "serve"], env=env,
                          capture_output=True, text=True, cwd=REPO, timeout=60)


@pytest.fixture(scope="module")
def default_app() -> Any:
    """An application of the default chain (made, never started)."""
    settings, chain = load(None, {"MISTRAL_API_KEY": "k"})
    return create_app(settings, chain)


def test_a_reporter_of_an_undeclared_event_stops_start_up() -> None:
    result = _serve(f"{PLUGIN}:audit,{PLUGIN}:misspelt")
    assert result.returncode == 1
    assert "cannot start: event 'acme.audtied' is not declared" in result.stderr
    assert "did you mean acme.audited?" in result.stderr


def test_two_plugins_declaring_one_event_stop_start_up_with_one_line() -> None:
    result = _serve(f"{PLUGIN}:audit,{PLUGIN}:twin")
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if "configuration error" in line] == [
        "mistral-sidecar: configuration error: plugins.chain (SIDECAR_PLUGINS_CHAIN): event "
        f"acme.audited is declared by both {PLUGIN}:audit and {PLUGIN}:twin"]


def test_two_plugins_feeding_one_family_stop_start_up() -> None:
    settings, chain = load(None, {"MISTRAL_API_KEY": "k",
                                  CHAIN: f"{PLUGIN}:audit,{PLUGIN}:copycat"})
    with pytest.raises(ConfigError) as caught:
        create_app(settings, chain)
    assert caught.value.problems == [
        "plugins.chain (SIDECAR_PLUGINS_CHAIN): metric family acme_audits is fed by events of both "
        f"{PLUGIN}:audit and {PLUGIN}:copycat"]


async def test_an_undeclared_event_in_a_request_is_a_logged_500(
        start_sidecar: SidecarFactory, caplog: pytest.LogCaptureFixture) -> None:
    sidecar = await start_sidecar(**{CHAIN: f"{PLUGIN}:rogue"})
    async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/v1/models") as resp:
        assert resp.status == 500
        assert (await resp.json())["code"] == "internal_error"
    assert any("undeclared event 'acme.undeclared'" in record.getMessage()
               for record in caplog.records if record.levelno == logging.ERROR)
    with pytest.raises(UndeclaredEvent, match=r"acme\.undeclared"):
        emit(sidecar.app, "acme.undeclared")


async def test_a_declared_event_feeds_its_counter_and_has_its_level(
        start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**{CHAIN: f"metrics,{PLUGIN}:audit"})
    for verdict in ("denied", "allowed", "denied"):
        async with aiohttp.ClientSession() as http, http.get(
                sidecar.url + "/v1/models", headers={"X-Acme-Verdict": verdict}) as resp:
            assert resp.status == 200
    m = await scrape(sidecar.url)
    assert m.value("mistral_sidecar_acme_audits_total", verdict="denied") == 2
    assert m.value("mistral_sidecar_acme_audits_total", verdict="allowed") == 1
    assert m.value("mistral_sidecar_events_total", event="acme.audited") == 3
    assert "# HELP mistral_sidecar_acme_audits_total Requests audited, by verdict." in m.text
    assert event_level(sidecar.app, "acme.audited", {"verdict": "denied"}) == logging.WARNING
    assert event_level(sidecar.app, "acme.audited", {"verdict": "allowed"}) == logging.INFO


def test_declarations_that_read_fields_they_do_not_declare_are_refused() -> None:
    from proxy.event_registry import EventMetric

    with pytest.raises(ValueError, match="undeclared fields verdict"):
        EventSpec("acme.audited", "A request was audited.",
                  metrics=(EventMetric("acme_audits", "Audits.", ("verdict",)),))


@pytest.mark.parametrize(("name", "fields", "level"), [
    ("ratelimit.decision", {"allowed": True}, logging.DEBUG),
    ("ratelimit.decision", {"allowed": False}, logging.INFO),
    ("ratelimit.fallback", {"active": True}, logging.WARNING),
    ("ratelimit.fallback", {"active": False}, logging.INFO),
    ("breaker.transition", {"to_state": "open"}, logging.WARNING),
    ("breaker.transition", {"to_state": "forced_open"}, logging.WARNING),
    ("breaker.transition", {"to_state": "half_open"}, logging.INFO),
    ("breaker.rejected", {"state": "open"}, logging.INFO),
    ("persistence.write_failed", {}, logging.WARNING),
    ("persistence.spooled", {}, logging.WARNING),
    ("persistence.replayed", {}, logging.INFO),
    ("guard.detection", {}, logging.WARNING),
    ("concurrency.rejected", {}, logging.WARNING),
    ("concurrency.admitted", {}, logging.DEBUG),
    ("keypool.cooldown", {}, logging.WARNING),
    ("retry.attempt", {}, logging.INFO),
    ("auth.denied", {}, logging.INFO),
    ("moderation.call", {}, logging.INFO),
    ("moderation.decision", {}, logging.INFO),
    ("output_guard.detection", {}, logging.INFO),
])
def test_built_in_events_keep_their_levels(default_app: Any, name: str, fields: dict[str, Any],
                                          level: int) -> None:
    assert event_level(default_app, name, fields) == level


def test_built_in_events_feed_the_families_dashboards_use(default_app: Any) -> None:
    families = {(metric.family, tuple(label.name for label in metric.label_readers))
                for spec in registry(default_app) for metric in spec.metrics}
    assert families == {
        ("ratelimit_decisions", ("limit", "decision", "scope")),
        ("ratelimit_fallbacks", ()),
        ("concurrency_rejections", ("scope",)),
        ("queue_wait_seconds", ("outcome",)),
        ("retries", ("reason",)),
        ("breaker_transitions", ("from_state", "to_state")),
        ("breaker_rejections", ("state",)),
        ("keypool_cooldowns", ("key_index", "status")),
        ("guard_detections", ("rule", "mode")),
        ("auth_denials", ("status", "reason")),
        ("persistence_spooled_records", ()),
        ("persistence_replayed_records", ()),
        ("unpriced_requests", ("model",)),
        ("cache_lookups", ("operation", "result")),
        ("cache_misses", ("operation", "reason")),
        ("cache_backend_errors", ("action", "reason")),
        ("fallbacks", ("from_model", "to_model")),
        ("budget_thresholds", ("scope", "period", "percent", "mode")),
        ("budget_refusals", ("scope", "period")),
        ("budget_fallbacks", ()),
        ("metrics_push_failures", ("sink",)),
        ("metrics_push_dropped_series", ("sink",)),
        ("metrics_push_overflow_points", ()),
    }


#: An event name passed as a literal to a reporting call: ``emit(app, "a.b"``,
#: ``emitter(app, "a.b")``, ``self._emit("a.b"`` ...
_REPORTED = re.compile(r"""\b_?emit(?:ter)?\((?:[^()"']*,\s*)?["']([a-z_]+\.[a-z_]+)["']""")


def test_every_event_the_built_in_plugins_report_is_declared() -> None:
    from aiohttp import web

    from proxy.chain import PluginChain
    from proxy.event_registry import EventRegistry

    every = PluginChain(sorted(f"plugins.{path.stem}" for path in (REPO / "plugins").iterdir()
                               if (path.suffix == ".py" and path.stem != "__init__")
                               or (path / "__init__.py").is_file()))
    declared = {spec.name for spec in EventRegistry.gather(every, web.Application())}
    reported = {name for path in (REPO / "plugins").rglob("*.py")
                for name in _REPORTED.findall(path.read_text())}
    assert "retry.attempt" in reported and "moderation.call" in reported
    assert reported <= declared, f"reported but not declared: {sorted(reported - declared)}"


def test_an_entry_that_is_not_a_declaration_stops_start_up() -> None:
    result = _serve(f"{PLUGIN}:sloppy")
    assert result.returncode == 2
    assert f"plugin {PLUGIN}:sloppy: sidecar_events returned 'acme.audited', not an " \
        "EventSpec" in result.stderr
