"""``/admin/keys``: the organisation's sidecar keys; create, rotate and revoke.

A new secret (of a key just created or rotated) is in the answer to that post and nowhere
else: the console does not keep it, and the form token it was posted with is spent, so
reloading that answer does not make another key.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plugins.console.api import ApiError
from plugins.console.markup import (
    Html,
    esc,
    field,
    fill,
    join,
    link,
    notice,
    query_string,
    select,
    table,
    when,
)
from plugins.console.web import Visit

PAGE_SIZE = 50

_SECRET = """
<section class="secret" aria-labelledby="secret-title">
<h2 id="secret-title">Copy the new secret now</h2>
<p>$what This is the only time it is shown: the sidecar keeps only a hash of it, and this page
will not show it again.</p>
<p><code class="secret-value" id="new-secret">$secret</code></p>
<p class="hint">A click selects all of it.</p>
</section>
"""

_CREATE = """
<form class="card" method="post" action="/admin/keys" aria-labelledby="create-title">
<h2 id="create-title">Create a key</h2>
$token
<div class="row">$owner $role $name $expires</div>
<button type="submit">Create key</button>
</form>
"""

_FILTER = """
<form class="filters" method="get" action="/admin/keys">
$owner <button type="submit">Filter</button> $clear
</form>
"""

_ACTIONS = """
<details class="act"><summary>Rotate…</summary>
<form method="post" action="/admin/keys/$key_id/rotate">$token
<p>A new secret replaces the current one, which stops working at once.</p>
<button type="submit">Rotate key $key_id</button></form></details>
<details class="act"><summary>Revoke…</summary>
<form method="post" action="/admin/keys/$key_id/revoke">$token
<p>The key stops working for good.</p>
<button type="submit" class="danger">Revoke key $key_id</button></form></details>
"""


async def _page(visit: Visit, *, message: Html | None = None,
                created: dict[str, Any] | None = None, form: dict[str, str] | None = None,
                status: int = 200) -> web.Response:
    """The keys page: a new secret first (if any), a message, the create form, the list."""
    query = visit.request.query if visit.request.method == "GET" else {}
    owner_filter, after = query.get("owner", ""), query.get("after", "")
    listing = await visit.api("listKeys", query={"owner": owner_filter, "after": after,
                                                 "limit": str(PAGE_SIZE)})
    roles = await visit.api("listRoles")
    grantable = {role["name"] for role in roles["data"] if role["grantable"]}
    parts = [_secret(created) if created else Html(""), message or Html("")]
    if grantable:
        parts.append(_create_form(visit, sorted(grantable), form or {}))
    parts.append(fill(_FILTER, owner=field("Owner", "owner", owner_filter),
                      clear=link("/admin/keys", "Show all") if owner_filter else ""))
    rows = [_row(visit, key, key["role"] in grantable) for key in listing["data"]]
    parts.append(table(("Key id", "Owner", "Role", "Name", "Status", "Created", "Expires",
                        "Rotated", "Revoked", ""), rows,
                       empty="No keys match." if owner_filter else "No keys yet."))
    if listing.get("has_more"):
        parts.append(fill('<p class="pager">$next</p>', next=link(
            "/admin/keys" + query_string(owner=owner_filter, after=listing["next_after"]),
            "Next page →")))
    return visit.page("Keys", join(parts), current="/admin/keys", status=status)


def _secret(created: dict[str, Any]) -> Html:
    what = fill("Key <code>$id</code> of <strong>$owner</strong> (role <code>$role</code>).",
                id=created["id"], owner=created["owner"], role=created["role"])
    return fill(_SECRET, what=what, secret=created["secret"])


def _create_form(visit: Visit, roles: list[str], form: dict[str, str]) -> Html:
    return fill(
        _CREATE, token=visit.token_field(),
        owner=field("Owner", "owner", form.get("owner", ""), required=True, maxlength=200,
                    hint="Who uses the key (a person or a service)."),
        role=select("Role", "role", [(r, r) for r in roles], form.get("role", "user")),
        name=field("Name", "name", form.get("name", ""), maxlength=200, hint="Optional label."),
        expires=field("Expires", "expires", form.get("expires", ""),
                      hint="Optional: 30d, 12h, 2026-01-31 or a date-time."))


def _row(visit: Visit, key: dict[str, Any], manageable: bool) -> list[Any]:
    status = key["status"]
    actions = Html("")
    if manageable and status == "active":
        actions = fill(_ACTIONS, key_id=key["id"], token=visit.token_field())
    mine = fill(' <span class="tag">you</span>') if key["id"] == visit.session.key_id else ""
    return [Html(f"<code>{esc(key['id'])}</code>{mine}"), key["owner"], key["role"],
            key.get("name") or "", Html(f'<span class="badge {esc(status)}">{esc(status)}'
                                        "</span>"),
            when(key.get("created_at")), when(key.get("expires_at")),
            when(key.get("rotated_at")), when(key.get("revoked_at")), actions]


async def keys_page(visit: Visit) -> web.StreamResponse:
    """``GET /admin/keys``: the organisation's keys (``owner`` filters, ``after`` pages)."""
    return await _page(visit)


async def create_key(visit: Visit) -> web.StreamResponse:
    """``POST /admin/keys``: create a key; the answer shows its secret, once."""
    form = visit.form
    body = {"owner": form.get("owner", "").strip(), "role": form.get("role", "")}
    for optional in ("name", "expires"):
        if form.get(optional, "").strip():
            body[optional] = form[optional].strip()
    try:
        created = await visit.api("createKey", body=body)
    except ApiError as error:
        if error.status in (400, 403):
            return await _page(visit, message=notice("error", error.message), form=form,
                               status=error.status)
        raise
    return await _page(visit, created=created)


async def rotate_key(visit: Visit) -> web.StreamResponse:
    """``POST /admin/keys/{key_id}/rotate``: a new secret, shown once; the old one stops
    working."""
    rotated = await visit.api("rotateKey", params={"key_id": visit.request.match_info["key_id"]})
    if rotated["id"] == visit.session.key_id:
        # The session's own key: its old secret no longer works, the new one carries on.
        visit.session.key = rotated["secret"]
    return await _page(visit, created=rotated)


async def revoke_key(visit: Visit) -> web.StreamResponse:
    """``POST /admin/keys/{key_id}/revoke``: the key stops working for good (revoking the
    key this session signed in with ends the session: the next call is refused)."""
    revoked = await visit.api("revokeKey", params={"key_id": visit.request.match_info["key_id"]})
    message = notice("ok", fill("Key <code>$id</code> of $owner is revoked: it no longer "
                                "works.", id=revoked["id"], owner=revoked["owner"]))
    return await _page(visit, message=message)
