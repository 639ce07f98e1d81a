"""Per-request tenancy rules: which resource a request touches, creates or deletes.

A request naming a resource the caller may not see answers 404 exactly like an unknown id,
so nobody learns what exists in another organisation or belongs to another user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from plugins.auth.ownership import (
    AGENT,
    BATCH_JOB,
    CONVERSATION,
    FILE,
    Ownership,
    OwnershipStore,
    may_see,
)
from plugins.auth.permissions import base_name
from proxy.context import Identity, RequestContext
from proxy.errors import SidecarError

#: Operation name prefix -> (kind, path parameter naming the resource).
_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("agents.", AGENT, "agent_id"),
    ("conversations.", CONVERSATION, "conversation_id"),
    ("files.", FILE, "file_id"),
    ("batch.jobs.", BATCH_JOB, "job_id"),
)

#: Operations that create a resource -> (kind, field of the JSON answer holding its id).
CREATES: dict[str, tuple[str, str]] = {
    "agents.create": (AGENT, "id"),
    "conversations.start": (CONVERSATION, "conversation_id"),
    "conversations.restart": (CONVERSATION, "conversation_id"),
    "files.upload": (FILE, "id"),
    "batch.jobs.create": (BATCH_JOB, "id"),
}

#: Operations that delete their target resource.
DELETES = frozenset({"agents.delete", "conversations.delete", "files.delete",
                     "batch.jobs.delete"})

_LABELS = {AGENT: "Agent", CONVERSATION: "Conversation", FILE: "File", BATCH_JOB: "Batch job"}


def not_found(kind: str) -> SidecarError:
    """The 404 for a resource the caller may not see (same as for one that does not exist)."""
    return SidecarError(404, f"{_LABELS[kind]} not found.")


@dataclass(frozen=True, slots=True)
class Target:
    """The resource a request acts on."""

    kind: str
    resource_id: str


def targets(ctx: RequestContext) -> list[Target]:
    """Every owned resource the request names: its path resource, an agent it would use
    (``agent_id`` in the body) and the input files of a batch job."""
    found: list[Target] = []
    op = ctx.operation
    if op is None:
        return found
    name = base_name(op)
    for prefix, kind, param in _TARGETS:
        if name.startswith(prefix) and ctx.path_params.get(param):
            found.append(Target(kind, ctx.path_params[param]))
    body = ctx.json if isinstance(ctx.json, dict) else {}
    agent_id = body.get("agent_id")
    if isinstance(agent_id, str) and agent_id and not any(t.kind == AGENT for t in found):
        found.append(Target(AGENT, agent_id))
    if name == "batch.jobs.create" and isinstance(body.get("input_files"), list):
        found.extend(Target(FILE, f) for f in body["input_files"] if isinstance(f, str) and f)
    return found


class Tenancy:
    """Checks requests against ownership records."""

    def __init__(self, ownership: OwnershipStore) -> None:
        self.ownership = ownership

    async def check(self, ctx: RequestContext, identity: Identity, org_admin: bool) -> None:
        """Raise 404 if the request names a resource the caller may not see.

        Raises :class:`~plugins.auth.cache.StoreUnreachable` when ownership cannot be read.
        """
        for target in targets(ctx):
            record = await self.ownership.get(target.kind, target.resource_id)
            if not may_see(identity, record, org_admin):
                raise not_found(target.kind)

    async def visible(self, identity: Identity, org_admin: bool, kind: str,
                      items: Iterable[Any]) -> list[Any]:
        """The list items (upstream JSON objects with an ``id``) the caller may see."""
        items = list(items)
        ids = [i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]
        records = await self.ownership.get_many(kind, ids) if ids else {}
        return [i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)
                and may_see(identity, records.get(i["id"]), org_admin)]

    def created(self, ctx: RequestContext, identity: Identity, body: Any) -> Ownership | None:
        """The ownership record for what a successful create answered, if anything."""
        if ctx.operation is None:
            return None
        spec = CREATES.get(base_name(ctx.operation))
        if spec is None or not isinstance(body, dict):
            return None
        kind, field = spec
        resource_id = body.get(field)
        if not isinstance(resource_id, str) or not resource_id:
            return None
        return Ownership(kind, resource_id, identity.org, identity.owner, identity.key_id)

    @staticmethod
    def deleted(ctx: RequestContext) -> Target | None:
        """The resource a delete operation removed (call only after a 2xx)."""
        if ctx.operation is None or base_name(ctx.operation) not in DELETES:
            return None
        found = targets(ctx)
        return found[0] if found else None
