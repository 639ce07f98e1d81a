"""``/v1/agents``: create, list, page, get, update (new version), switch version, delete."""

from __future__ import annotations

import base64
import copy
from typing import Any

from aiohttp import web

from .errors import not_found, validation_failed
from .ids import new_id, now_iso
from .state import STATE_KEY, AgentRecord, MockState
from .validation import paginate, query_int, read_json_object, require

routes = web.RouteTableDef()

_EDITABLE = (
    "model",
    "name",
    "instructions",
    "tools",
    "completion_args",
    "guardrails",
    "description",
    "handoffs",
    "metadata",
    "deployment_chat",
    "version_message",
)


def get_agent(state: MockState, agent_id: str) -> AgentRecord:
    """The agent ``agent_id`` or a 404."""
    record = state.agents.get(agent_id)
    if record is None:
        raise not_found(f"Agent {agent_id} not found")
    return record


def _filtered(request: web.Request) -> list[dict[str, Any]]:
    """Current documents of all agents matching the list filters, newest first."""
    agents = [record.current for record in reversed(request.app[STATE_KEY].agents.values())]
    query = request.query
    if name := query.get("name"):
        agents = [a for a in agents if a["name"] == name]
    if search := query.get("search"):
        needle = search.lower()
        agents = [a for a in agents if needle in a["name"].lower() or needle in a["id"]]
    if agent_id := query.get("id"):
        agents = [a for a in agents if a["id"] == agent_id]
    if (deployment := query.get("deployment_chat")) in ("true", "false"):
        agents = [a for a in agents if a["deployment_chat"] == (deployment == "true")]
    return agents


def _version_param(raw: str, record: AgentRecord) -> int:
    try:
        version = int(raw)
    except ValueError:
        raise not_found(f"Version {raw} not found") from None
    if version not in record.versions:
        raise not_found(f"Version {version} not found for agent {record.current['id']}")
    return version


@routes.post("/v1/agents")
async def create_agent(request: web.Request) -> web.Response:
    """Create an agent at version 0."""
    body = await read_json_object(request)
    require(body, {"model": str, "name": str})
    now = now_iso()
    agent: dict[str, Any] = {
        "object": "agent",
        "id": new_id("ag"),
        "name": body["name"],
        "model": body["model"],
        "instructions": body.get("instructions"),
        "tools": body.get("tools") or [],
        "completion_args": body.get("completion_args") or {},
        "guardrails": body.get("guardrails"),
        "description": body.get("description"),
        "handoffs": body.get("handoffs"),
        "metadata": body.get("metadata"),
        "version_message": body.get("version_message"),
        "version": 0,
        "versions": [0],
        "created_at": now,
        "updated_at": now,
        "deployment_chat": False,
        "source": "api",
        "owner_id": None,
    }
    request.app[STATE_KEY].agents[agent["id"]] = AgentRecord(
        current=agent, versions={0: copy.deepcopy(agent)}
    )
    return web.json_response(agent)


@routes.get("/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    """List agents, newest first, ``page``/``page_size`` paginated."""
    page = query_int(request, "page", 0)
    page_size = query_int(request, "page_size", 20, minimum=1, maximum=1000)
    return web.json_response(paginate(_filtered(request), page, page_size))


@routes.get("/v1/agents/pages")
async def list_agent_pages(request: web.Request) -> web.Response:
    """Cursor-paginated listing; ``next_page_token`` is an opaque offset."""
    page_size = query_int(request, "page_size", 20, minimum=1, maximum=1000)
    offset = 0
    if token := request.query.get("page_token"):
        try:
            offset = int(base64.urlsafe_b64decode(token.encode()).decode())
        except ValueError:
            raise validation_failed(
                [
                    {
                        "type": "value_error",
                        "loc": ["query", "page_token"],
                        "msg": "Invalid page token",
                        "input": token,
                    }
                ]
            ) from None
    agents = _filtered(request)
    data = agents[offset : offset + page_size]
    next_offset = offset + page_size
    next_token = (
        base64.urlsafe_b64encode(str(next_offset).encode()).decode()
        if next_offset < len(agents)
        else None
    )
    return web.json_response({"object": "list", "data": data, "next_page_token": next_token})


@routes.get("/v1/agents/{agent_id}")
async def get_agent_route(request: web.Request) -> web.Response:
    """The agent's current version, or the one named by ``agent_version``."""
    record = get_agent(request.app[STATE_KEY], request.match_info["agent_id"])
    if raw := request.query.get("agent_version"):
        return web.json_response(record.versions[_version_param(raw, record)])
    return web.json_response(record.current)


@routes.patch("/v1/agents/{agent_id}")
async def update_agent(request: web.Request) -> web.Response:
    """Apply the given fields as a new version, which becomes the current one."""
    body = await read_json_object(request)
    record = get_agent(request.app[STATE_KEY], request.match_info["agent_id"])
    agent = copy.deepcopy(record.current)
    for name in _EDITABLE:
        if body.get(name) is not None:
            agent[name] = body[name]
    version = max(record.versions) + 1
    agent["version"] = version
    agent["updated_at"] = now_iso()
    record.versions[version] = agent
    versions = sorted(record.versions)
    for snapshot in record.versions.values():
        snapshot["versions"] = versions
    record.current = agent
    return web.json_response(agent)


@routes.delete("/v1/agents/{agent_id}")
async def delete_agent(request: web.Request) -> web.Response:
    """Delete the agent and all its versions."""
    state = request.app[STATE_KEY]
    get_agent(state, request.match_info["agent_id"])
    del state.agents[request.match_info["agent_id"]]
    return web.Response(status=204)


@routes.patch("/v1/agents/{agent_id}/version")
async def switch_version(request: web.Request) -> web.Response:
    """Make the existing version given by the ``version`` query parameter current."""
    record = get_agent(request.app[STATE_KEY], request.match_info["agent_id"])
    if "version" not in request.query:
        raise validation_failed(
            [
                {
                    "type": "missing",
                    "loc": ["query", "version"],
                    "msg": "Field required",
                    "input": None,
                }
            ]
        )
    version = _version_param(request.query["version"], record)
    record.current = record.versions[version]
    return web.json_response(record.current)


@routes.get("/v1/agents/{agent_id}/versions")
async def list_versions(request: web.Request) -> web.Response:
    """Every version of the agent, newest first, paginated."""
    record = get_agent(request.app[STATE_KEY], request.match_info["agent_id"])
    page = query_int(request, "page", 0)
    page_size = query_int(request, "page_size", 20, minimum=1, maximum=100)
    snapshots = [record.versions[v] for v in sorted(record.versions, reverse=True)]
    return web.json_response(paginate(snapshots, page, page_size))


@routes.get("/v1/agents/{agent_id}/versions/{version}")
async def get_version(request: web.Request) -> web.Response:
    """One version of the agent."""
    record = get_agent(request.app[STATE_KEY], request.match_info["agent_id"])
    return web.json_response(record.versions[_version_param(request.match_info["version"], record)])
