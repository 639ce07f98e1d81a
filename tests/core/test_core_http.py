"""Plain-HTTP behaviour of the forwarding path: headers, errors, request ids, cancellation."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.conftest import MOCK_KEY, MockUpstream, Sidecar, SidecarFactory, free_port, wait_for

CHAT = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> Sidecar:
    return await start_sidecar(SIDECAR_PLUGINS_CHAIN="via")


def _headers_of(record: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in record["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_hop_by_hop_and_caller_authorization_never_reach_upstream(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    headers = {
        "Authorization": "Bearer caller-secret",
        "Connection": "keep-alive, X-Private-Hop",
        "Keep-Alive": "timeout=5",
        "X-Private-Hop": "must-not-pass",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "TE": "trailers",
        "Upgrade": "h2c",
        "X-Custom": "kept",
        "Mistral-Custom": "kept-too",
    }
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions?trace=1", json=CHAT, headers=headers
    ) as resp:
        assert resp.status == 200
        body = await resp.text()
        assert MOCK_KEY not in body and MOCK_KEY not in str(resp.headers)
    record = (await mock_upstream.requests())[-1]
    seen = _headers_of(record)
    assert seen["authorization"] == [f"Bearer {MOCK_KEY}"]
    for hop in ("keep-alive", "x-private-hop", "proxy-authorization", "te", "upgrade"):
        assert hop not in seen, hop
    assert seen["x-custom"] == ["kept"] and seen["mistral-custom"] == ["kept-too"]
    assert record["query_string"] == "trace=1"
    assert "caller-secret" not in json.dumps(record)


async def test_request_id_taken_from_caller_or_generated(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT,
                             headers={"X-Request-ID": "req-123"}) as resp:
            assert resp.headers["X-Request-ID"] == "req-123"
        async with http.post(sidecar.url + "/v1/chat/completions", json=CHAT) as resp:
            generated = resp.headers["X-Request-ID"]
            assert len(generated) == 32
    records = await mock_upstream.requests()
    assert _headers_of(records[-2])["x-request-id"] == ["req-123"]
    assert _headers_of(records[-1])["x-request-id"] == [generated]


async def test_upstream_errors_pass_through_unchanged(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    body = {"object": "error", "message": "slow down", "type": "rate_limited", "code": "1300"}
    await mock_upstream.fault(path_prefix="/v1/chat", action="respond", status=429, body=body,
                              headers={"Retry-After": "7", "X-RateLimit-Remaining": "0"})
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as resp:
        # A streaming request that upstream refuses reaches the caller as the refusal,
        # never as a 200 followed by a broken stream.
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        assert resp.headers["X-RateLimit-Remaining"] == "0"
        assert await resp.json() == body


async def test_unreachable_upstream_is_502_in_mistral_shape(start_sidecar: SidecarFactory) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="via", MISTRAL_BASE_URL=dead)
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=CHAT
    ) as resp:
        assert resp.status == 502
        body = await resp.json()
    assert body["object"] == "error" and body["code"] == "upstream_unreachable"
    assert set(body) == {"object", "message", "type", "code"}


async def test_upstream_timeout_is_504(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="via",
                                  SIDECAR_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS="0.3")
    await mock_upstream.fault(path_prefix="/v1/chat", action="stall")
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=CHAT
    ) as resp:
        assert resp.status == 504
        assert (await resp.json())["code"] == "upstream_timeout"


async def test_idle_stream_is_cut_not_completed(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="via",
                                  SIDECAR_UPSTREAM_IDLE_TIMEOUT_SECONDS="0.3")
    await mock_upstream.settings(token_interval_ms=1000, stream_tokens=3)
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_caller_disconnect_cancels_an_upstream_request_not_billed_by_usage(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    # A billed JSON call finishes instead (tests/security/test_security_cut_short_is_charged.py).
    await mock_upstream.fault(path_prefix="/v1/models", action="stall")
    async with aiohttp.ClientSession() as http:
        task = asyncio.ensure_future(http.get(sidecar.url + "/v1/models"))
        await wait_for(lambda: _upstream_has_request(mock_upstream))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def cancelled() -> bool:
        records = await mock_upstream.requests()
        return bool(records) and records[-1].get("cancelled") is True

    await wait_for(cancelled)


async def test_caller_disconnect_mid_stream_cancels_upstream(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    await mock_upstream.settings(token_interval_ms=200, stream_tokens=50)
    async with aiohttp.ClientSession() as http:
        resp = await http.post(sidecar.url + "/v1/chat/completions", json={**CHAT, "stream": True})
        await resp.content.readline()
        resp.close()

    async def cancelled() -> bool:
        records = await mock_upstream.requests()
        return bool(records) and records[-1].get("cancelled") is True

    await wait_for(cancelled, timeout=5)


async def _upstream_has_request(mock: MockUpstream) -> bool:
    return bool(await mock.requests())


async def test_health_endpoints_and_unknown_routes(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(sidecar.url + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(sidecar.url + "/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"
        async with http.get(sidecar.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
        async with http.get(sidecar.url + "/nothing-here") as resp:
            assert resp.status == 404
            assert (await resp.json())["object"] == "error"


async def test_unknown_future_paths_are_forwarded(
    sidecar: Sidecar, mock_upstream: MockUpstream
) -> None:
    async with aiohttp.ClientSession() as http, http.get(
        sidecar.url + "/v1/some/future/endpoint?x=1"
    ) as resp:
        assert resp.status == 404  # the mock's answer, passed through
    records = await mock_upstream.requests()
    assert records[-1]["path"] == "/v1/some/future/endpoint"


async def test_via_plugin_marks_responses(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=CHAT
    ) as resp:
        assert resp.headers["Via"].startswith("1.1 mistral-sidecar")
