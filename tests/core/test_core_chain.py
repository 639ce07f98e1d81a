"""The hook chain: order, short-circuits, around-advice, observation and third-party loading."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.chain import PluginChain, installed_plugins
from proxy.settings import ConfigError
from tests.conftest import MockUpstream, SidecarFactory
from tests.core.sample_plugins import CALLS

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "one two"}]}
CHAIN = "tests.core.sample_plugins:first,tests.core.sample_plugins:second"


async def _post(url: str, body: dict, **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(
        url + "/v1/chat/completions", json=body, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def test_hooks_run_in_chain_order_and_wrappers_nest(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=CHAIN)
    status, _ = await _post(sidecar.url, CHAT)
    assert status == 200
    calls = [c for c in sidecar.app[CALLS] if not c[1].startswith("usage")]
    assert calls == [
        ("first", "startup"), ("second", "startup"),
        ("first", "on_request"), ("second", "on_request"),
        ("first", "wrap:before"), ("second", "wrap:before"),
        ("second", "wrap:after"), ("first", "wrap:after"),
        ("first", "on_end:ok"), ("second", "on_end:ok"),
    ]


async def test_completion_sees_usage_of_json_and_streamed_answers(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.core.sample_plugins:first")
    await _post(sidecar.url, CHAT)
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as resp:
        await resp.read()
    usages = [c[1] for c in sidecar.app[CALLS] if c[1].startswith("usage")]
    assert len(usages) == 2 and usages[0] == usages[1] and usages[0] != "usage:None"


async def test_reject_short_circuits_later_plugins(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=CHAIN)
    status, body = await _post(sidecar.url, CHAT, **{"X-Reject-At": "first"})
    assert status == 403
    assert body == {"object": "error", "message": "rejected by first",
                    "type": "permission_error", "code": "forbidden"}
    calls = sidecar.app[CALLS][2:]
    assert calls == [("first", "on_request"), ("first", "on_end:error:403"),
                     ("second", "on_end:error:403")]


async def test_a_plugin_may_answer_itself(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=CHAIN)
    status, body = await _post(sidecar.url, CHAT, **{"X-Answer-At": "first"})
    assert status == 200 and body == {"answered_by": "first"}
    assert ("second", "on_request") not in sidecar.app[CALLS]
    assert ("first", "wrap:before") not in sidecar.app[CALLS]


async def test_rewrite_response_changes_buffered_json(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.core.sample_plugins:rewriter")
    status, body = await _post(sidecar.url, CHAT, **{"Accept-Encoding": "gzip, br"})
    assert status == 200 and body["rewritten"] is True and body["choices"]
    # A body the sidecar rewrites is asked for uncompressed, whatever the caller accepts.
    sent = (await mock_upstream.requests())[-1]["headers"]
    assert [v for k, v in sent if k.lower() == "accept-encoding"] == ["identity"]


async def test_broken_observer_does_not_break_the_response(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.core.sample_plugins:broken")
    status, body = await _post(sidecar.url, CHAT)
    assert status == 200 and body["choices"]


async def test_stream_events_observed_and_conversation_reassembled(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.core.sample_plugins:first")
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/conversations",
        json={"model": "mistral-small-latest", "inputs": "a b c", "stream": True},
    ) as resp:
        assert resp.status == 200
        await resp.read()
    assert ("first", "outputs:1") in sidecar.app[CALLS]


async def test_a_stream_observer_that_has_seen_enough_is_not_called_again(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(
        SIDECAR_PLUGINS_CHAIN="tests.core.sample_plugins:first_event_only,"
                              "tests.core.sample_plugins:every_event")
    bodies = []
    for _ in range(2):
        async with aiohttp.ClientSession() as http, http.post(
            sidecar.url + "/v1/chat/completions",
            json={**CHAT, "messages": [{"role": "user", "content": "one two three four"}],
                  "stream": True},
        ) as resp:
            assert resp.status == 200
            bodies.append(await resp.text())
    seen: dict[str, list[str]] = {}
    for name, request_id in sidecar.app[CALLS]:
        seen.setdefault(name, []).append(request_id)
    # the caller got every event; the observer that had enough saw one per stream, the
    # observer after it in the chain still saw them all
    events = [body.count("data:") for body in bodies]
    assert all(count > 3 for count in events)
    assert len(seen["first_event_only"]) == 2 and len(set(seen["first_event_only"])) == 2
    assert len(seen["every_event"]) == sum(events)


async def test_shutdown_runs_in_reverse_order(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=CHAIN)
    calls = sidecar.app[CALLS]
    await sidecar.server.close()
    assert calls[-2:] == [("second", "shutdown"), ("first", "shutdown")]


def test_third_party_plugin_loads_from_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_sidecar_plugin.py").write_text(textwrap.dedent("""
        from proxy import hookimpl

        @hookimpl
        def on_request(ctx):
            ctx.response_headers["X-Acme"] = "1"
    """))
    dist = tmp_path / "acme_sidecar_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sidecar-plugin\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text("[mistral_sidecar]\nacme = acme_sidecar_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert installed_plugins()["acme"] == "acme_sidecar_plugin"
    chain = PluginChain(["acme", "via"])
    assert [c.plugin_name for c in chain.callers("on_request")] == ["acme"]
    assert chain.describe()[0][:2] == ("acme", "acme_sidecar_plugin")
    sys.modules.pop("acme_sidecar_plugin", None)


def test_unknown_and_duplicate_plugins_are_config_errors() -> None:
    with pytest.raises(ConfigError) as unknown:
        PluginChain(["via", "nope"])
    assert "unknown plugin 'nope'" in unknown.value.problems[0]
    with pytest.raises(ConfigError) as twice:
        PluginChain(["via", "via"])
    assert "listed twice" in twice.value.problems[0]


def test_hook_signature_mistakes_are_reported(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "typo_plugin.py").write_text(
        "from proxy import hookimpl\n\n@hookimpl\ndef on_requets(ctx):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        PluginChain(["typo_plugin"])
    assert "on_requets" in caught.value.problems[0]
    sys.modules.pop("typo_plugin", None)


def test_events_reach_the_observers_that_want_them_with_the_arguments_they_take() -> None:
    from aiohttp import web

    from proxy.app import PLUGINS
    from proxy.events import emit, emitter
    from tests.core.event_plugins import SEEN

    # guard and retry declare the events; they observe none
    app = web.Application()
    app[PLUGINS] = PluginChain(["guard", "retry", "tests.core.event_plugins:narrow",
                                "tests.core.event_plugins:partial"])
    SEEN.clear()
    emit(app, "guard.detection", None, rule="email")
    emit(app, "retry.attempt", None, attempt=2)
    report = emitter(app, "retry.attempt")
    assert report is not None
    report(None, {"attempt": 3})
    assert SEEN == [("partial", "guard.detection", {"rule": "email"}),
                    ("narrow", "retry.attempt", {"attempt": 2}),
                    ("partial", "retry.attempt", {"attempt": 2}),
                    ("narrow", "retry.attempt", {"attempt": 3}),
                    ("partial", "retry.attempt", {"attempt": 3})]

    only_narrow = web.Application()
    only_narrow[PLUGINS] = PluginChain(["guard", "tests.core.event_plugins:narrow"])
    assert emitter(only_narrow, "guard.detection") is None


@pytest.mark.parametrize("option", ["hookwrapper", "wrapper", "tryfirst", "trylast"])
def test_hookimpl_options_the_core_would_ignore_stop_start_up_with_one_line(
    option: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        PluginChain([f"tests.core.option_plugins:{option}"])
    (line,) = caught.value.problems
    assert f"{option}=True" in line and "tests.core.option_plugins" in line
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check-config"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin",
             "SIDECAR_PLUGINS_CHAIN": f"tests.core.option_plugins:{option}"},
        cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("configuration error") == 1 and f"{option}=True" in result.stderr


async def test_hookimpl_options_the_core_honours_load_and_run(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="tests.core.option_plugins:honoured")
    status, _ = await _post(sidecar.url, CHAT)
    assert status == 200


async def test_a_failed_start_up_shuts_down_what_had_started(
    aiohttp_server: Any, base_env: dict[str, str]
) -> None:
    from proxy.app import create_app
    from proxy.loader import load

    settings, chain = load(None, {**base_env, "SIDECAR_PLUGINS_CHAIN":
                                  f"{CHAIN},tests.core.sample_plugins:failing_startup"})
    app = create_app(settings, chain)
    with pytest.raises(RuntimeError, match="cannot start"):
        await aiohttp_server(app)
    # Both recorders started and were shut down, in reverse; the failed one was not.
    assert app[CALLS] == [("first", "startup"), ("second", "startup"),
                          ("second", "shutdown"), ("first", "shutdown")]
