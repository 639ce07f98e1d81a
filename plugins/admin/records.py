"""``/admin/v1/agents`` and ``/admin/v1/conversations``: what the organisation owns, read
from the sidecar's own database, and adoption of what nobody owns.

Ownership decides visibility, as in the proxy (:func:`plugins.auth.ownership.may_see` for an
org admin): a resource recorded for the caller's organisation is shown; one recorded for
another answers 404 like an unknown id; one with no record (made outside the sidecar) only to
admins of ``auth.unowned_org``, who may adopt it into their organisation
(``mistral-sidecar adopt``'s code, :func:`plugins.auth.cli.adopt`). A deleted conversation
loses its ownership record: its stored entries are then shown to nobody here.

Conversations and their entries are those the persistence plugin recorded; agents are the
ownership records, with what the persistence plugin saw of each (name, model, status).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plugins.admin.audit import AGENT_ADOPT, CONVERSATION_ADOPT, audit
from plugins.admin.plumbing import (
    AdminRequest,
    answer,
    bad_request,
    iso_seconds,
    json_body,
    not_found,
    page,
    page_params,
    query,
    resource_id_or_404,
    unavailable,
)
from plugins.auth import AUTH
from plugins.auth.cli import adopt, adoption_problem
from plugins.auth.ownership import AGENT, CONVERSATION, Ownership, StoreUnreachable
from plugins.persistence.commands import parse_since, plain_row, read_conversation
from proxy.errors import SidecarError

_DELETED = "deleted"
#: An unrecorded, not deleted row of ``{table}`` (shown to admins of the unowned org).
_UNRECORDED = ("NOT EXISTS (SELECT 1 FROM auth_ownership u WHERE u.kind = ? "
               "AND u.resource_id = {table}.id) AND {table}.status <> ?")


def _unowned_admin(admin: AdminRequest) -> bool:
    return admin.caller.org == admin.config.unowned_org


async def _ownership(admin: AdminRequest, kind: str, resource_id: str,
                     max_age: float | None = None) -> Ownership | None:
    try:
        return await admin.app[AUTH].ownership.get(kind, resource_id, max_age=max_age)
    except StoreUnreachable:
        raise unavailable() from None


# --- agents ----------------------------------------------------------------------------------


async def list_agents(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/agents``: a page of the organisation's agents, in id order."""
    limit, after = page_params(query(admin.request, ("limit", "after")))
    ids = "SELECT resource_id AS id FROM auth_ownership WHERE kind = ? AND org = ?"
    params: list[Any] = [AGENT, admin.caller.org]
    if _unowned_admin(admin):
        ids += " UNION SELECT id FROM agents WHERE " + _UNRECORDED.format(table="agents")
        params += [AGENT, _DELETED]
    params.append(AGENT)
    where = ""
    if after is not None:
        where = "WHERE ids.id > ? "
        params.append(after)
    rows = await admin.run(admin.db.fetchall(
        "SELECT ids.id AS id, o.org AS org, o.owner AS owner, o.key_id AS key_id, "
        "o.created_at AS recorded, a.name AS name, a.model AS model, a.status AS status, "
        "a.created_at AS created_at, a.updated_at AS updated_at "
        f"FROM ({ids}) ids "
        "LEFT JOIN auth_ownership o ON o.kind = ? AND o.resource_id = ids.id "
        f"LEFT JOIN agents a ON a.id = ids.id {where}ORDER BY ids.id LIMIT ?",
        (*params, limit + 1)))
    return answer(page([_agent(row) for row in rows], limit))


def _agent(row: dict[str, Any]) -> dict[str, Any]:
    plain = plain_row(row)
    recorded = row["recorded"]
    return {"object": "agent", "id": plain["id"], "org": plain["org"],
            "owner": plain["owner"], "created_by_key": plain["key_id"],
            "recorded_at": None if recorded is None else iso_seconds(float(recorded)),
            "name": plain["name"], "model": plain["model"], "status": plain["status"],
            "created_at": plain["created_at"], "updated_at": plain["updated_at"]}


# --- conversations ---------------------------------------------------------------------------


async def list_conversations(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/conversations``: a page of the organisation's stored conversations,
    in id order, optionally only one owner's, one agent's or those started since a time."""
    params = query(admin.request, ("limit", "after", "owner", "agent_id", "since"))
    limit, after = page_params(params)
    visible = "o.org = ?"
    args: list[Any] = [CONVERSATION, admin.caller.org]
    if _unowned_admin(admin):
        visible = f"({visible} OR (o.resource_id IS NULL AND c.status <> ?))"
        args.append(_DELETED)
    where = [visible]
    if "owner" in params:
        where.append("COALESCE(o.owner, c.owner_id) = ?")
        args.append(params["owner"])
    if "agent_id" in params:
        where.append("c.agent_id = ?")
        args.append(params["agent_id"])
    if "since" in params:
        since = parse_since(params["since"])
        if since is None:
            raise bad_request("since: expected a date such as 2025-01-31 or an ISO-8601 time.")
        where.append("c.created_at >= ?")
        args.append(since)
    if after is not None:
        where.append("c.id > ?")
        args.append(after)
    rows = await admin.run(admin.db.fetchall(
        "SELECT c.id AS id, o.org AS org, COALESCE(o.owner, c.owner_id) AS owner, "
        "c.agent_id AS agent_id, c.model AS model, c.name AS name, c.status AS status, "
        "c.created_at AS created_at, c.updated_at AS updated_at "
        "FROM conversations c LEFT JOIN auth_ownership o "
        "ON o.kind = ? AND o.resource_id = c.id "
        f"WHERE {' AND '.join(where)} ORDER BY c.id LIMIT ?", (*args, limit + 1)))
    return answer(page([{"object": "conversation", **plain_row(row)} for row in rows], limit))


async def get_conversation(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/conversations/{conversation_id}``: a stored conversation and every
    entry of it, oldest first (``mistral-sidecar conversations show``'s read)."""
    query(admin.request, ())
    conversation_id = resource_id_or_404(admin.path_param("conversation_id"), "Conversation")
    record = await _ownership(admin, CONVERSATION, conversation_id)
    if record is not None and record.org != admin.caller.org:
        raise not_found("Conversation")
    if record is None and not _unowned_admin(admin):
        raise not_found("Conversation")
    found = await admin.run(read_conversation(admin.db, conversation_id))
    if found is None:
        raise not_found("Conversation")
    conversation, entries = found
    if record is None and conversation.get("status") == _DELETED:
        raise not_found("Conversation")
    return answer({"object": "conversation", **conversation,
                   "org": None if record is None else record.org,
                   "owner": conversation.get("owner_id") if record is None else record.owner,
                   "entries": entries})


# --- adoption --------------------------------------------------------------------------------


async def _adopt(admin: AdminRequest, kind: str, param: str, label: str,
                 action: str) -> web.Response:
    query(admin.request, ())
    resource_id = resource_id_or_404(admin.path_param(param), label)
    body = await json_body(admin.request, {}, {"owner": str})
    owner = body.get("owner", "adopted")
    caller = admin.caller
    # Read afresh: a record written moments ago by another replica must not be overwritten.
    record = await _ownership(admin, kind, resource_id, max_age=0)
    if record is not None:
        if record.org == caller.org:
            raise SidecarError(409, f"{label} already belongs to your organisation.",
                               code="already_owned")
        raise not_found(label)
    if not _unowned_admin(admin):
        raise not_found(label)
    problem = adoption_problem(kind, resource_id, caller.org, owner)
    if problem is not None:
        raise bad_request(f"{problem[0]}: {problem[1]}.")
    adopted = await admin.run(adopt(admin.db, kind, resource_id, caller.org, owner))
    admin.app[AUTH].ownership.cache.put(adopted.key, adopted)
    audit(caller, action, resource_id, owner=owner)
    return answer({"object": kind, "id": resource_id, "org": adopted.org,
                   "owner": adopted.owner})


async def adopt_agent(admin: AdminRequest) -> web.Response:
    """``POST /admin/v1/agents/{agent_id}/adopt``: put an agent nobody owns under the
    caller's organisation."""
    return await _adopt(admin, AGENT, "agent_id", "Agent", AGENT_ADOPT)


async def adopt_conversation(admin: AdminRequest) -> web.Response:
    """``POST /admin/v1/conversations/{conversation_id}/adopt``: put a conversation nobody
    owns under the caller's organisation and ``owner``."""
    return await _adopt(admin, CONVERSATION, "conversation_id", "Conversation",
                        CONVERSATION_ADOPT)
