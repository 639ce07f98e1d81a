"""Per-request tenancy rules: which resources a request touches, creates or deletes.

A request naming a resource the caller may not see, in its path or anywhere in its body
(:mod:`plugins.auth.references`), answers 404 exactly like an unknown id, so nobody learns
what exists in another organisation or belongs to another user. Everything is read from the
classified operation and its (canonical, decoded) path parameters, never from the raw
target, so a ``HEAD`` is checked exactly as the ``GET`` it is classified as.
"""

from __future__ import annotations

import contextlib
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
    StoreUnreachable,
    may_see,
)
from plugins.auth.permissions import base_name
from plugins.auth.references import body_references, may_reference
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


def path_target(ctx: RequestContext) -> Target | None:
    """The tracked resource the request's path names, if any."""
    op = ctx.operation
    if op is None:
        return None
    name = base_name(op)
    for prefix, kind, param in _TARGETS:
        if name.startswith(prefix) and ctx.path_params.get(param):
            return Target(kind, ctx.path_params[param])
    return None


def targets(ctx: RequestContext, form: list[Target] | None = None) -> list[Target]:
    """Every tracked resource the request names: its path resource, then those its JSON
    body names (and ``form``: those its multipart form names), each once."""
    found: dict[Target, None] = {}
    target = path_target(ctx)
    if target is not None:
        found[target] = None
    op = ctx.operation
    if op is not None and may_reference(op.name, ctx.body):
        for kind, resource_id in body_references(op.name, ctx.json):
            found[Target(kind, resource_id)] = None
    for item in form or ():
        found[item] = None
    return list(found)


class Tenancy:
    """Checks requests against ownership records."""

    def __init__(self, ownership: OwnershipStore, unowned_org: str,
                 recheck_after: float = 0.2) -> None:
        self.ownership = ownership
        #: The organisation whose admins see resources nobody recorded.
        self.unowned_org = unowned_org
        #: A "no record" answer at least this old is read again before it denies (another
        #: replica may have just written the record).
        self.recheck_after = recheck_after

    def may_see(self, identity: Identity, record: Ownership | None, org_admin: bool) -> bool:
        """Whether ``identity`` may see the resource ``record`` describes."""
        return may_see(identity, record, org_admin, self.unowned_org)

    async def check(self, ctx: RequestContext, identity: Identity, org_admin: bool,
                    form: list[Target] | None = None) -> None:
        """Raise 404 if the request names a resource the caller may not see.

        Raises :class:`~plugins.auth.cache.StoreUnreachable` when ownership cannot be read.
        """
        found = targets(ctx, form)
        by_kind: dict[str, list[str]] = {}
        for target in found:
            by_kind.setdefault(target.kind, []).append(target.resource_id)
        records: dict[Target, Ownership | None] = {}
        for kind, ids in by_kind.items():
            got = (await self.ownership.get_many(kind, ids) if len(ids) > 1
                   else {ids[0]: await self.ownership.get(kind, ids[0])})
            records.update((Target(kind, i), got.get(i)) for i in ids)
        for target in found:  # in order: the path's resource decides the message
            record = records[target]
            if record is None and not self.may_see(identity, None, org_admin):
                # Only ever turns a denial into an answer: unreachable, it stays a denial.
                with contextlib.suppress(StoreUnreachable):
                    record = await self.ownership.get(target.kind, target.resource_id,
                                                      max_age=self.recheck_after)
            if not self.may_see(identity, record, org_admin):
                raise not_found(target.kind)

    async def visible(self, identity: Identity, org_admin: bool, kind: str,
                      items: Iterable[Any]) -> list[Any]:
        """The list items (upstream JSON objects with an ``id``) the caller may see."""
        items = list(items)
        ids = [i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]
        records = await self.ownership.get_many(kind, ids) if ids else {}
        return [i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)
                and self.may_see(identity, records.get(i["id"]), org_admin)]

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
        return path_target(ctx)
