"""The admin API's OpenAPI 3.1 document, built from the route table and the descriptions
here (one per ``operationId``): what every route takes and answers.

A route without a description here fails the first request for the document (and the test
that compares the document with the routes served), so the two cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from plugins.admin.plumbing import DEFAULT_PAGE, MAX_BODY_BYTES, MAX_PAGE
from plugins.persistence.usage_report import DEFAULT_GROUPS, GROUPS
from proxy import __version__

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


_TIME = _nullable("string", format="date-time")
_STRING = {"type": "string"}


def _obj(properties: dict[str, Any], required: Sequence[str] | None = None,
         **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required), **more}


def _list_of(item: str) -> dict[str, Any]:
    return _obj({"object": {"const": "list"}, "data": {"type": "array", "items": _ref(item)},
                 "has_more": {"type": "boolean"},
                 "next_after": _nullable("string", description="Pass as `after` for the "
                                         "next page (null on the last page).")})


_KEY = {
    "object": {"const": "key"},
    "id": {"type": "string", "pattern": "^[0-9a-f]{16}$",
           "description": "The key's public id (the `<id>` of `sk-sidecar-<id>-<secret>`)."},
    "owner": _STRING, "org": _STRING, "role": _STRING, "name": _nullable("string"),
    "status": {"enum": ["active", "revoked", "expired"]},
    "created_at": {"type": "string", "format": "date-time"},
    "expires_at": _TIME, "revoked_at": _TIME, "rotated_at": _TIME,
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"object": {"const": "error"}, "message": _STRING, "type": _STRING,
                   "code": _nullable("string")},
                  description="Every error, in Mistral's shape."),
    "Caller": _obj({"object": {"const": "caller"}, "key_id": _STRING, "owner": _STRING,
                    "org": _STRING, "role": _STRING,
                    "actions": {"type": "array", "items": _STRING}}),
    "Role": _obj({"object": {"const": "role"}, "name": _STRING,
                  "actions": {"type": "array", "items": _STRING},
                  "grantable": {"type": "boolean", "description": "Whether the caller may "
                                "create, revoke and rotate keys of this role."}}),
    "RoleList": _obj({"object": {"const": "list"},
                      "data": {"type": "array", "items": _ref("Role")}}),
    "Key": _obj(_KEY, description="A sidecar key: never its secret."),
    "NewKey": _obj({**_KEY, "secret": {"type": "string", "description": "The whole key to "
                                       "present as `Authorization: Bearer`; shown only in "
                                       "this answer."}},
                   description="A key just created or rotated, with its secret."),
    "KeyList": _list_of("Key"),
    "KeyCreate": _obj({
        "owner": {"type": "string", "minLength": 1, "maxLength": 200},
        "role": {"type": "string", "description": "A role of `auth.roles` that grants "
                 "nothing the caller's role does not."},
        "name": _nullable("string", maxLength=200, description="A label."),
        "expires": _nullable("string", description="When the key stops working: a date "
                             "(2026-01-31, 00:00 UTC), a date-time (2026-01-31T12:00:00Z) or "
                             "a duration from now (90d, 12h, 30m, 45s, 2w)."),
        "org": {"type": "string", "description": "The caller's organisation (the only one "
                "accepted); may be left out."},
    }, ["owner", "role"], additionalProperties=False),
    "Empty": _obj({}, [], additionalProperties=False),
    "UsageRow": _obj({
        "owner_id": _nullable("string"), "key_id": _nullable("string"),
        "org": _nullable("string"), "model": _nullable("string"),
        "day": _nullable("string", format="date"),
        "requests": {"type": "integer"}, "errors": {"type": "integer"},
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "cost": _nullable("string", description="Exact decimal; null when a request of the "
                          "group reported tokens of a model without a price."),
        "currency": _nullable("string"), "unpriced": {"type": "integer"},
        "estimated": {"type": "integer", "description": "Requests whose tokens are the "
                      "sidecar's estimate: cut short before upstream reported them."},
    }, ["requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost",
        "currency", "unpriced", "estimated"],
        description="One group; it carries the columns `by` named."),
    "Usage": _obj({"object": {"const": "list"}, "by": {"type": "array", "items": _STRING},
                   "from": _nullable("string", format="date"),
                   "to": _nullable("string", format="date"),
                   "data": {"type": "array", "items": _ref("UsageRow")}}),
    "Agent": _obj({
        "object": {"const": "agent"}, "id": _STRING,
        "org": _nullable("string", description="null: nobody owns it (adopt it)."),
        "owner": _nullable("string"), "created_by_key": _nullable("string"),
        "recorded_at": _TIME, "name": _nullable("string"), "model": _nullable("string"),
        "status": _nullable("string"), "created_at": _TIME, "updated_at": _TIME}),
    "AgentList": _list_of("Agent"),
    "Conversation": _obj({
        "object": {"const": "conversation"}, "id": _STRING,
        "org": _nullable("string", description="null: nobody owns it (adopt it)."),
        "owner": _nullable("string"), "agent_id": _nullable("string"),
        "model": _nullable("string"), "name": _nullable("string"), "status": _STRING,
        "created_at": _TIME, "updated_at": _TIME}),
    "ConversationList": _list_of("Conversation"),
    "Entry": {"type": "object", "required": ["id", "conversation_id", "seq", "type"],
              "properties": {"id": _STRING, "conversation_id": _STRING,
                             "seq": {"type": "integer"}, "type": _STRING,
                             "role": _nullable("string"), "content": {},
                             "content_json": {}, "created_at": _TIME},
              "description": "One stored entry, every column of `conversation_entries`."},
    "ConversationDetail": {
        "allOf": [_ref("Conversation"), {"type": "object", "required": ["entries"],
                                         "properties": {"entries": {
                                             "type": "array", "items": _ref("Entry")}}}],
        "description": "Every column of the stored conversation, and its entries oldest "
                       "first."},
    "Adopt": _obj({"owner": {"type": "string", "minLength": 1, "description": "Owner "
                   "within the organisation (default: adopted)."}}, [],
                  additionalProperties=False),
    "Adopted": _obj({"object": {"enum": ["agent", "conversation"]}, "id": _STRING,
                     "org": _STRING, "owner": _STRING}),
    "State": _obj({
        "object": {"const": "state"},
        "status": {"enum": ["starting", "ready", "unready"]},
        "checks": {"type": "object", "description": "Each plugin's readiness report (as "
                   "the details of /readyz): breaker, ratelimit, persistence, keypool ..."},
        "gauges": {"type": "array", "items": _obj({
            "plugin": _STRING, "name": _STRING,
            "labels": {"type": "object", "additionalProperties": _STRING},
            "value": {"type": "number"}})}}),
}

_ERRORS = {
    "400": "Invalid parameters or body (unknown field, wrong type, malformed JSON).",
    "401": "No sidecar key, or one that is unknown, revoked or expired.",
    "403": "The caller's role does not grant the admin action this route needs.",
    "404": "Unknown, or of another organisation (the two look alike).",
    "405": "The path exists with other methods (see `Allow`).",
    "409": "The change conflicts with the resource's state.",
    "413": f"The body exceeds {MAX_BODY_BYTES} bytes.",
    "415": "The body is not application/json.",
    "503": "The key store or database cannot answer; retry (`Retry-After`).",
}


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path",
            "description": description, "schema": schema or _STRING}


_PAGE = [
    _param("limit", "query", f"Items per page (default {DEFAULT_PAGE}).", type="integer",
           minimum=1, maximum=MAX_PAGE),
    _param("after", "query", "Only items whose id sorts after this one (a page's "
           "`next_after`)."),
]

#: ``operationId`` -> summary, description, parameters, request body schema, success
#: status and schema, extra error statuses.
_OPERATIONS: dict[str, dict[str, Any]] = {
    "getOpenApi": {"summary": "This document", "ok": ("200", None)},
    "getMe": {"summary": "Who is calling", "ok": ("200", "Caller")},
    "listRoles": {"summary": "The role table, and the roles the caller may give keys",
                  "ok": ("200", "RoleList")},
    "listKeys": {"summary": "The organisation's keys, in id order",
                 "params": [*_PAGE, _param("owner", "query", "Only this owner's keys.")],
                 "ok": ("200", "KeyList")},
    "createKey": {"summary": "Create a key; its secret is in this answer only",
                  "body": "KeyCreate", "ok": ("201", "NewKey")},
    "getKey": {"summary": "One key of the organisation", "ok": ("200", "Key")},
    "revokeKey": {"summary": "Revoke a key for good (at once on this replica, within "
                  "auth.cache_ttl_seconds on the others)", "body": "Empty",
                  "ok": ("200", "Key")},
    "rotateKey": {"summary": "Give a key a new secret; the old one stops working",
                  "body": "Empty", "ok": ("200", "NewKey"), "errors": ["409"]},
    "getUsage": {"summary": "Requests, tokens and cost of the organisation, per group",
                 "params": [
                     _param("by", "query", f"Comma-separated groups among "
                            f"{', '.join(GROUPS)} (default {','.join(DEFAULT_GROUPS)})."),
                     _param("from", "query", "First UTC day included.", type="string",
                            format="date"),
                     _param("to", "query", "Last UTC day included.", type="string",
                            format="date"),
                     _param("owner", "query", "Only this owner."),
                     _param("key", "query", "Only this key id."),
                     _param("model", "query", "Only this model.")],
                 "ok": ("200", "Usage")},
    "listAgents": {"summary": "The organisation's agents (and, for admins of "
                   "auth.unowned_org, those nobody owns)", "params": _PAGE,
                   "ok": ("200", "AgentList")},
    "adoptAgent": {"summary": "Put an agent nobody owns under the caller's organisation "
                   "(admins of auth.unowned_org only)", "body": "Adopt",
                   "ok": ("200", "Adopted"), "errors": ["409"]},
    "listConversations": {"summary": "The organisation's stored conversations",
                          "params": [*_PAGE,
                                     _param("owner", "query", "Only this owner's."),
                                     _param("agent_id", "query", "Only this agent's."),
                                     _param("since", "query", "Only those started at or "
                                            "after this date or ISO-8601 time.")],
                          "ok": ("200", "ConversationList")},
    "getConversation": {"summary": "A stored conversation and its entries",
                        "ok": ("200", "ConversationDetail")},
    "adoptConversation": {"summary": "Put a conversation nobody owns under the caller's "
                          "organisation and an owner (admins of auth.unowned_org only)",
                          "body": "Adopt", "ok": ("200", "Adopted"), "errors": ["409"]},
    "listBudgets": {"summary": "The organisation's budgets and what each spent this period "
                    "(budgets plugin)", "ok": ("200", None)},
    "getState": {"summary": "Live state of the answering process: breaker, limiter, spool, "
                 "key pool", "ok": ("200", "State")},
}


def _operation(method: str, path: str, operation_id: str, action: str | None
               ) -> dict[str, Any]:
    spec = _OPERATIONS[operation_id]
    status, schema = spec["ok"]
    content = {"application/json": {"schema": _ref(schema) if schema else {"type": "object"}}}
    responses: dict[str, Any] = {status: {"description": "Success.", "content": content}}
    errors = ["400", "401", "403", "405", "503", *spec.get("errors", ())]
    params = [_param(name, "path", f"The {name.replace('_', ' ')}.")
              for name in re.findall(r"{(\w+)}", path)] + list(spec.get("params", ()))
    if params and any(p["in"] == "path" for p in params):
        errors.append("404")
    operation: dict[str, Any] = {
        "operationId": operation_id, "summary": spec["summary"],
        "description": "Needs a sidecar key whose role grants "
                       f"`{action}`." if action else "Needs a sidecar key whose role grants "
                       "any admin action.",
        "tags": [path.split("/")[3].split(".")[0]],
        "parameters": params, "responses": responses,
    }
    if "body" in spec:
        errors += ["413", "415"]
        operation["requestBody"] = {
            "required": spec["body"] not in ("Empty", "Adopt"),
            "content": {"application/json": {"schema": _ref(spec["body"])}}}
    for code in sorted(set(errors)):
        responses[code] = {"description": _ERRORS[code],
                           "content": {"application/json": {"schema": _ref("Error")}}}
    return operation


def document(routes: Sequence[tuple[str, str, str, str | None]]) -> dict[str, Any]:
    """The OpenAPI document for ``routes``: ``(method, path, operationId, action)`` each."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation_id, action in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, operation_id,
                                                                action)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mistral-sidecar admin API", "version": __version__,
                 "description": "Keys, usage, agents, conversations and live state of one "
                 "organisation: the caller's. Authenticate with a sidecar key "
                 "(`Authorization: Bearer sk-sidecar-...`) whose role grants the route's "
                 "admin action (admin:keys, admin:usage, admin:records, admin:state; the "
                 "built-in admin role grants them all). Every change is written to the "
                 "audit log (logger mistral_sidecar.audit)."},
        "servers": [{"url": "/"}],
        "security": [{"sidecarKey": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"sidecarKey": {"type": "http", "scheme": "bearer",
                                               "description": "A sidecar key."}},
        },
    }
