"""The unauthenticated control API under ``/__mock__``: faults, settings, reset, logs."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .faults import parse_fault
from .state import STATE_KEY, MockState

routes = web.RouteTableDef()


def _settings_json(state: MockState) -> dict[str, Any]:
    settings = state.settings
    return {
        "latency_ms": settings.latency_ms,
        "token_interval_ms": settings.token_interval_ms,
        "stream_tokens": settings.stream_tokens,
        "gzip": settings.gzip,
    }


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError:
        return None


@routes.post("/__mock__/faults")
async def add_fault(request: web.Request) -> web.Response:
    """Register a fault; answers ``{"id": ..., "fault": {...}}``."""
    try:
        fault = parse_fault(await _json(request))
    except ValueError as exc:
        return _bad(str(exc))
    request.app[STATE_KEY].faults.append(fault)
    return web.json_response({"id": fault.id, "fault": fault.to_json()}, status=201)


@routes.get("/__mock__/faults")
async def list_faults(request: web.Request) -> web.Response:
    """Faults still armed, in matching order."""
    return web.json_response([f.to_json() for f in request.app[STATE_KEY].faults])


@routes.delete("/__mock__/faults")
async def clear_faults(request: web.Request) -> web.Response:
    """Disarm every fault."""
    request.app[STATE_KEY].faults.clear()
    return web.Response(status=204)


@routes.delete("/__mock__/faults/{fault_id}")
async def delete_fault(request: web.Request) -> web.Response:
    """Disarm one fault."""
    faults = request.app[STATE_KEY].faults
    kept = [f for f in faults if f.id != request.match_info["fault_id"]]
    if len(kept) == len(faults):
        return web.json_response({"error": "no such fault"}, status=404)
    faults[:] = kept
    return web.Response(status=204)


@routes.get("/__mock__/settings")
async def get_settings(request: web.Request) -> web.Response:
    """Current latency, frame interval and stream length."""
    return web.json_response(_settings_json(request.app[STATE_KEY]))


@routes.put("/__mock__/settings")
async def put_settings(request: web.Request) -> web.Response:
    """Change any of ``latency_ms``, ``token_interval_ms``, ``stream_tokens``, ``gzip``."""
    state = request.app[STATE_KEY]
    data = await _json(request)
    if not isinstance(data, dict):
        return _bad("body must be a JSON object")
    updates: dict[str, Any] = {}
    for name, kind in (("latency_ms", float), ("token_interval_ms", float), ("stream_tokens", int)):
        if data.get(name) is None:
            continue
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return _bad(f"{name} must be a non-negative number")
        updates[name] = kind(value)
    if data.get("gzip") is not None:
        if not isinstance(data["gzip"], bool):
            return _bad("gzip must be true or false")
        updates["gzip"] = data["gzip"]
    if updates.get("stream_tokens") == 0:
        return _bad("stream_tokens must be at least 1")
    for name, value in updates.items():
        setattr(state.settings, name, value)
    return web.json_response(_settings_json(state))


@routes.post("/__mock__/reset")
async def reset(request: web.Request) -> web.Response:
    """Forget resources, faults, the request log, and restore start-up settings."""
    request.app[STATE_KEY].reset()
    return web.Response(status=204)


@routes.get("/__mock__/requests")
async def list_requests(request: web.Request) -> web.Response:
    """The most recent ``/v1`` requests (oldest first), optionally filtered by ``path_prefix``."""
    records = list(request.app[STATE_KEY].requests)
    if prefix := request.query.get("path_prefix"):
        records = [r for r in records if r.path.startswith(prefix)]
    return web.json_response([r.to_json() for r in records])


@routes.delete("/__mock__/requests")
async def clear_requests(request: web.Request) -> web.Response:
    """Empty the request log (and the statistics)."""
    state = request.app[STATE_KEY]
    state.requests.clear()
    state.stats.clear()
    return web.Response(status=204)


@routes.get("/__mock__/stats")
async def stats(request: web.Request) -> web.Response:
    """Request counts: ``{"total": n, "by_path": {path: n}}``."""
    counter = request.app[STATE_KEY].stats
    return web.json_response({"total": sum(counter.values()), "by_path": dict(counter)})
