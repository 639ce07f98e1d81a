"""``/admin/v1/keys``: the organisation's sidecar keys, through the code ``keys create``,
``list``, ``revoke`` and ``rotate`` use (:mod:`plugins.auth.keystore`, :mod:`plugins.auth.cli`).

A key's secret is answered once, by the create or rotate that made it, and is never listed,
logged or stored (only its hash is). A key of another organisation answers 404, exactly like
an id nobody has. After a change this process re-reads its key table at once, so a revoked
key or a rotated-out secret stops working here before the answer is sent; other replicas and
workers follow within ``auth.cache_ttl_seconds``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from plugins.admin.audit import KEY_CREATE, KEY_REVOKE, KEY_ROTATE, audit
from plugins.admin.plumbing import (
    AdminRequest,
    answer,
    bad_request,
    iso_seconds,
    json_body,
    key_id_or_404,
    not_found,
    page,
    page_params,
    query,
)
from plugins.auth import AUTH
from plugins.auth.cli import parse_expiry
from plugins.auth.keystore import KeyRecord, KeyStore, key_problem
from proxy.errors import SidecarError

logger = logging.getLogger("mistral_sidecar.admin")


def describe(record: KeyRecord, now: float) -> dict[str, Any]:
    """A key as the API shows it: never its secret, nor the hash of it."""
    return {
        "object": "key", "id": record.key_id, "owner": record.owner, "org": record.org,
        "role": record.role, "name": record.name, "status": record.status(now),
        "created_at": iso_seconds(record.created_at),
        "expires_at": iso_seconds(record.expires_at),
        "revoked_at": iso_seconds(record.revoked_at),
        "rotated_at": iso_seconds(record.rotated_at),
    }


def _store(admin: AdminRequest) -> KeyStore:
    return KeyStore(admin.db)


async def _own_key(admin: AdminRequest) -> KeyRecord:
    """The key the path names, if it is of the caller's organisation; else 404."""
    key_id = key_id_or_404(admin.path_param("key_id"))
    record = await admin.run(_store(admin).get(key_id))
    if record is None or record.org != admin.caller.org:
        raise not_found("Key")
    return record


def _may_manage(admin: AdminRequest, role: str, verb: str) -> None:
    if not admin.config.roles.may_manage(admin.caller.role, role):
        raise SidecarError(403, f"Your role ({admin.caller.role}) may not {verb} keys of role "
                           f"{role!r}: it grants more than yours.", code="role_too_powerful")


async def _take_effect_here(admin: AdminRequest) -> None:
    """Re-read the key table of this process, so that the change applies to its next
    request (a failure leaves it to the background refresh)."""
    try:
        refreshed = await admin.app[AUTH].keys.refresh()
    except Exception:
        logger.exception("re-reading the key table after an admin change failed")
        refreshed = False
    if not refreshed:
        # The change is made (in the database); it only reaches this replica later.
        logger.warning("the key table could not be re-read: the change takes effect here "
                       "within auth.cache_ttl_seconds")


async def list_keys(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/keys``: a page of the organisation's keys, in id order."""
    params = query(admin.request, ("limit", "after", "owner"))
    limit, after = page_params(params)
    records = await admin.run(_store(admin).page(admin.caller.org, after, limit + 1,
                                                 owner=params.get("owner")))
    now = time.time()
    return answer(page([describe(r, now) for r in records], limit))


async def create_key(admin: AdminRequest) -> web.Response:
    """``POST /admin/v1/keys``: a new key of the organisation; its secret is in this answer
    only."""
    query(admin.request, ())
    body = await json_body(admin.request, {"owner": str, "role": str},
                           {"name": str, "expires": str, "org": str})
    caller = admin.caller
    if body.get("org", caller.org) != caller.org:
        raise SidecarError(403, "An admin creates keys in its own organisation only.",
                           code="other_org")
    owner, role, name = body["owner"], body["role"], body.get("name")
    problem = key_problem(owner, role, caller.org, admin.config.roles.grants, name)
    if problem is not None:
        raise bad_request(f"{problem[0]}: {problem[1]}.")
    _may_manage(admin, role, "create")
    expires_at = None
    if "expires" in body:
        try:
            expires_at = parse_expiry(body["expires"], time.time())
        except ValueError as exc:
            raise bad_request(str(exc).removeprefix("--")) from None
    record, secret = await admin.run(_store(admin).create(owner, role, caller.org, name,
                                                          expires_at))
    await _take_effect_here(admin)
    audit(caller, KEY_CREATE, record.key_id, owner=owner, role=role)
    return answer({**describe(record, time.time()), "secret": secret}, status=201)


async def get_key(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/keys/{key_id}``."""
    query(admin.request, ())
    return answer(describe(await _own_key(admin), time.time()))


async def revoke_key(admin: AdminRequest) -> web.Response:
    """``POST /admin/v1/keys/{key_id}/revoke``: for good; revoking twice changes nothing."""
    query(admin.request, ())
    await json_body(admin.request, {}, {})
    record = await _own_key(admin)
    _may_manage(admin, record.role, "revoke")
    if record.revoked_at is None:
        await admin.run(_store(admin).revoke(record.key_id))
        await _take_effect_here(admin)
        audit(admin.caller, KEY_REVOKE, record.key_id, owner=record.owner, role=record.role)
    revoked = await admin.run(_store(admin).get(record.key_id))
    return answer(describe(revoked or record, time.time()))


async def rotate_key(admin: AdminRequest) -> web.Response:
    """``POST /admin/v1/keys/{key_id}/rotate``: a new secret, in this answer only; the old one
    stops working."""
    query(admin.request, ())
    await json_body(admin.request, {}, {})
    record = await _own_key(admin)
    _may_manage(admin, record.role, "rotate")
    secret = None
    if record.revoked_at is None:
        secret = await admin.run(_store(admin).rotate(record.key_id))
    if secret is None:
        raise SidecarError(409, "A revoked key cannot be rotated.", code="key_revoked")
    await _take_effect_here(admin)
    audit(admin.caller, KEY_ROTATE, record.key_id, owner=record.owner, role=record.role)
    rotated = await admin.run(_store(admin).get(record.key_id))
    return answer({**describe(rotated or record, time.time()), "secret": secret})


async def list_roles(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/roles``: the role table, and which roles the caller may give keys."""
    query(admin.request, ())
    roles = admin.config.roles
    return answer({"object": "list", "data": [
        {"object": "role", "name": name, "actions": sorted(grants),
         "grantable": roles.may_manage(admin.caller.role, name)}
        for name, grants in roles.grants.items()]})
