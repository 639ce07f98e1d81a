"""The auth plugin: who is calling, what their role allows, and which resources they may see.

* Authentication (``auth.mode``): ``keys`` — callers present sidecar keys and the sidecar
  sends the real ``MISTRAL_API_KEY`` upstream; ``passthrough`` — callers present their own
  Mistral key, which goes upstream, and are identified by its fingerprint.
* Authorisation: each operation maps to an action (:mod:`plugins.auth.permissions`) that the
  caller's role must grant (``auth.roles``), else 403.
* Tenancy: agents belong to an organisation, conversations, files and batch jobs to an owner
  (:mod:`plugins.auth.ownership`); foreign ids, in the path or in the body
  (:mod:`plugins.auth.references`), answer 404 and lists show only what the caller may see
  (:mod:`plugins.auth.listing`). It fails closed: a resource without an ownership record is
  visible only to the admins of ``auth.unowned_org``, and requests outside the spec only to
  the roles in ``auth.unmapped_roles``.

Needs the ``store`` plugin before it in the chain.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from plugins.auth import cli
from plugins.auth.authenticate import (
    Authenticator,
    AuthFailure,
    PassthroughPolicy,
    passthrough_identity,
)
from plugins.auth.cache import StoreHealth, StoreUnreachable
from plugins.auth.keysnapshot import RELATIVE_PATH as KEY_SNAPSHOT_PATH
from plugins.auth.keysnapshot import KeySnapshot
from plugins.auth.keystore import KeyStore
from plugins.auth.keytable import KeyTable
from plugins.auth.listing import LISTS, ListPlan, plan_for, wrap_list
from plugins.auth.ownership import CONVERSATION, Ownership, OwnershipStore
from plugins.auth.permissions import (
    DEFAULT_ROLES,
    ORG_ADMIN,
    RoleTable,
    action_for_request,
    base_name,
    check_roles,
)
from plugins.auth.references import form_fields, form_references
from plugins.auth.spool import OwnershipSpool
from plugins.auth.tenancy import CREATES, Target, Tenancy
from plugins.store import DATABASE, STORE_STATUS
from plugins.store.deadline import within
from proxy import STOP_OBSERVING, StopObserving, hookimpl
from proxy.app import SETTINGS
from proxy.context import Identity, RequestContext, UpstreamCall
from proxy.errors import SidecarError
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emit
from proxy.settings import Setting, Settings
from proxy.sse import SSEEvent

__all__ = ["AUTH", "AuthState"]

_STATE = "auth"
_WWW_AUTHENTICATE = 'Bearer realm="mistral-sidecar"'


@dataclass(slots=True)
class AuthState:
    """Everything the plugin keeps on the application."""

    mode: str
    roles: RoleTable
    health: StoreHealth
    keys: KeyTable
    authenticator: Authenticator
    passthrough: PassthroughPolicy
    ownership: OwnershipStore
    tenancy: Tenancy
    scan_page_size: int
    scan_max_items: int
    max_form_bytes: int


AUTH = web.AppKey("auth_state", AuthState)


# --- settings --------------------------------------------------------------------------------


def _check_role_map(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return "must map key fingerprints (fp-...) to role names"
    return None


#: The events this plugin emits.
EVENTS = (
    EventSpec("auth.denied", "A request was refused by authentication or authorisation.",
              fields=("status", "reason"),
              metrics=(EventMetric("auth_denials",
                                   "Requests denied by authentication or authorisation.",
                                   ("status", "reason")),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Authentication mode, roles, caches and list scanning."""
    return [
        Setting("auth.mode", "str", "keys",
                "keys: callers present sidecar keys and MISTRAL_API_KEY goes upstream; "
                "passthrough: callers present their own Mistral key, identified by its "
                "fingerprint.", choices=("keys", "passthrough")),
        Setting("auth.roles", "data", DEFAULT_ROLES,
                "Role table: role name -> list of actions it may perform (* for all). "
                "Unlisted actions are denied.", env=None, check=check_roles),
        Setting("auth.cache_ttl_seconds", "float", 2.0,
                "How often every replica re-reads the key table it serves keys from (and how "
                "long an ownership lookup is reused); a revoked or rotated key stops working "
                "on every replica within this time. 0 re-reads the caller's key on every "
                "request.", minimum=0),
        Setting("auth.stale_ttl_seconds", "float", 3600.0,
                "While the database is unreachable, keys and ownership it vouched for within "
                "this many seconds keep working from memory (unknown keys get 503); also the "
                "oldest key snapshot a replica starting during an outage serves from.",
                minimum=0),
        Setting("auth.db_timeout_seconds", "float", 2.0,
                "A key or ownership query slower than this counts as a database outage; "
                "requests then answer from memory until a background probe finds the "
                "database back.", minimum=0.01),
        Setting("auth.key_snapshot", "bool", True,
                "PostgreSQL: keep the key table (ids, roles, owners and secret hashes, never "
                "secrets) in <data dir>/auth/keys.json (mode 0600), so that a replica "
                "starting while the database is unreachable serves the keys that existed "
                "before; without it such a replica refuses to start."),
        Setting("auth.passthrough.role", "str", "user",
                "Role of passthrough callers not listed in auth.passthrough.roles."),
        Setting("auth.passthrough.roles", "data", {},
                "Passthrough mode: key fingerprint (see `keys fingerprint`) -> role.",
                env=None, check=_check_role_map),
        Setting("auth.passthrough.allow_in_production", "bool", False,
                "Allow passthrough mode when ENVIRONMENT=production (callers' own Mistral keys "
                "then reach upstream and identify them)."),
        Setting("auth.passthrough.org", "str", "",
                "Passthrough mode: organisation of every caller; empty gives each key "
                "fingerprint its own organisation."),
        Setting("auth.list_scan_page_size", "int", 100,
                "Page size the sidecar uses when it pages through upstream lists to filter "
                "them by owner.", minimum=1),
        Setting("auth.list_scan_max_items", "int", 10000,
                "Most upstream items scanned to answer one filtered list request; deeper "
                "pages answer 400.", minimum=1),
        Setting("auth.unowned_org", "str", "default",
                "Organisation whose admins see resources the sidecar has no ownership record "
                "for (created outside it), until `mistral-sidecar adopt` assigns them; "
                "everyone else gets 404."),
        Setting("auth.unmapped_roles", "list", [],
                "Roles that may send requests outside the Mistral API spec (no operation, "
                "so no action or ownership can be checked); empty denies them to every "
                "role, admin included."),
    ]


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """Keys mode needs an upstream key; roles named elsewhere must exist; store comes first."""
    problems = []
    if settings.serving and settings["environment"] == "production" \
            and settings["auth.mode"] == "passthrough" \
            and not settings["auth.passthrough.allow_in_production"]:
        problems.append("SIDECAR_AUTH_MODE: passthrough is refused when ENVIRONMENT=production "
                        "unless SIDECAR_AUTH_PASSTHROUGH_ALLOW_IN_PRODUCTION=true")
    if settings.serving and settings["auth.mode"] == "keys" and not settings["upstream.api_key"]:
        problems.append("MISTRAL_API_KEY: required when SIDECAR_AUTH_MODE=keys")
    roles = settings["auth.roles"]
    if settings["auth.passthrough.role"] not in roles:
        problems.append(f"auth.passthrough.role (SIDECAR_AUTH_PASSTHROUGH_ROLE): unknown role "
                        f"{settings['auth.passthrough.role']!r}")
    for fp, role in settings["auth.passthrough.roles"].items():
        if role not in roles:
            problems.append(f"auth.passthrough.roles: {fp}: unknown role {role!r}")
    for role in settings["auth.unmapped_roles"]:
        if role not in roles:
            problems.append(f"auth.unmapped_roles (SIDECAR_AUTH_UNMAPPED_ROLES): unknown role "
                            f"{role!r}")
    if not str(settings["auth.unowned_org"]).strip():
        problems.append("auth.unowned_org (SIDECAR_AUTH_UNOWNED_ORG): must not be empty")
    return problems


# --- lifecycle -------------------------------------------------------------------------------


#: Keys and ownership live in the store plugin's database.
requires = ("store",)

#: Under ``server.data_dir``: ownership records waiting for the database.
SPOOL_DIR = Path("spool") / "auth"

#: PostgreSQL unreachable at start-up does not stop the store: this plugin decides, serving
#: keys from its snapshot or refusing to start (see :data:`plugins.store.SERVES_WITHOUT_DATABASE`).
serves_without_database = True


@hookimpl
def startup(app: web.Application) -> Any:
    """Load the key table (from the database, else from its snapshot), build the ownership
    store and role table, replay spooled ownership, start the background key refresh."""
    settings = app[SETTINGS]
    db = app.get(DATABASE)
    if db is None:
        raise RuntimeError("the auth plugin needs the store plugin before it in plugins.chain")
    ttl = float(settings["auth.cache_ttl_seconds"])
    stale = float(settings["auth.stale_ttl_seconds"])
    health = StoreHealth(float(settings["auth.db_timeout_seconds"]),
                         probe=functools.partial(db.fetchone, "SELECT 1 AS ok"))
    snapshot = None
    # The embedded SQLite file is always there: nothing to ride out, no copy of it needed.
    if settings["auth.key_snapshot"] and db.dialect != "sqlite":
        snapshot = KeySnapshot(Path(settings["server.data_dir"]) / KEY_SNAPSHOT_PATH)
    keys = KeyTable(KeyStore(db), health, refresh_interval=ttl, stale_ttl=stale,
                    snapshot=snapshot)
    spool = OwnershipSpool(Path(settings["server.data_dir"]) / SPOOL_DIR)
    ownership = OwnershipStore(db, health, spool, cache_ttl=max(ttl, 30.0), negative_ttl=ttl,
                               stale_ttl=stale)
    state = AuthState(
        mode=settings["auth.mode"],
        roles=RoleTable(settings["auth.roles"], settings["auth.unmapped_roles"]),
        health=health,
        keys=keys,
        authenticator=Authenticator(keys),
        passthrough=PassthroughPolicy(settings["auth.passthrough.role"],
                                      dict(settings["auth.passthrough.roles"]),
                                      settings["auth.passthrough.org"]),
        ownership=ownership,
        tenancy=Tenancy(ownership, str(settings["auth.unowned_org"])),
        scan_page_size=int(settings["auth.list_scan_page_size"]),
        scan_max_items=int(settings["auth.list_scan_max_items"]),
        max_form_bytes=int(settings["limits.max_upload_bytes"]),
    )
    app[AUTH] = state
    return _start(app, state, float(settings["db.startup_wait_seconds"]))


async def _start(app: web.Application, state: AuthState, wait: float) -> None:
    try:
        if state.mode == "keys":
            await _load_keys(app, state, wait)
        else:
            # Passthrough callers need no key table, but nothing vouches for old resources
            # without the database: start only with it, as always.
            await _wait_for_database(app, wait, "")
        await state.ownership.start()
    except BaseException:
        # No shutdown hook runs when a start-up fails, and the pool the store opened would
        # keep the process from exiting (its workers outlive cancellation): close it here.
        await state.health.close()
        db = app.get(DATABASE)
        if db is not None:
            await db.close()
        raise
    if state.mode == "keys":
        state.keys.start()


async def _load_keys(app: web.Application, state: AuthState, wait: float) -> None:
    problem = await state.keys.load()
    if problem is None:
        return
    # No usable snapshot: wait for the database, as a start-up always has.
    await _wait_for_database(app, wait, f", and {problem}")
    try:
        await within(state.keys.read_all(), state.health.timeout)
    except Exception as exc:
        raise RuntimeError(f"cannot read API keys: {exc or type(exc).__name__}") from None
    state.health.succeeded()
    await state.keys.save_snapshot()


async def _wait_for_database(app: web.Application, wait: float, why_not_without: str
                             ) -> None:
    """Return once the store's database opens; raise (one line) if it does not in time."""
    status = app.get(STORE_STATUS)
    if status is None or await status.wait_open(wait):
        return
    if status.schema_behind:
        raise RuntimeError(status.problem)
    raise RuntimeError(f"{status.problem or 'database unreachable'}{why_not_without}")


@hookimpl
def shutdown(app: web.Application) -> Any:
    """Stop the key refresh; try once more to write spooled ownership records (the rest wait
    in the spool)."""
    state = app.get(AUTH)
    if state is None:
        return None

    async def stop() -> None:
        await state.keys.close()
        await state.ownership.close()
        await state.health.close()

    return stop()


@hookimpl
def readiness(app: web.Application) -> dict[str, Any] | None:
    """Mode, whether lookups currently reach the database, where keys come from (no
    secrets)."""
    state = app.get(AUTH)
    if state is None:
        return None
    report: dict[str, Any] = {
        "ok": True,
        "mode": state.mode,
        "store": ("unreachable, serving keys from memory" if state.health.down
                  else "reachable"),
        "pending_ownership": len(state.ownership.pending),
    }
    if state.mode == "keys":
        age = state.keys.age()
        report.update(keys=len(state.keys), key_source=state.keys.source,
                      key_table_age_seconds=None if age is None else round(age, 1))
    return {"auth": report}


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``keys create|list|revoke|rotate|fingerprint``, ``adopt`` and ``agents adopt``."""
    cli.register(subparsers)


# --- requests --------------------------------------------------------------------------------


def _deny(ctx: RequestContext, status: int, reason: str, message: str) -> SidecarError:
    emit(ctx.app, "auth.denied", ctx, status=status, reason=reason)
    ctx.log["auth_denied"] = reason
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = _WWW_AUTHENTICATE
    elif status == 503:
        headers["Retry-After"] = "1"
    code = "store_unavailable" if status == 503 else None
    return SidecarError(status, message, code=code, headers=headers)


def _unavailable(ctx: RequestContext) -> SidecarError:
    return _deny(ctx, 503, "store_unavailable",
                  "The sidecar cannot check access right now (store unreachable); retry "
                  "shortly.")


async def _identify(ctx: RequestContext, state: AuthState) -> Identity:
    authorization = ctx.request.headers.get("Authorization")
    try:
        if state.mode == "passthrough":
            identity, upstream_key = passthrough_identity(authorization, state.passthrough)
            ctx.upstream_api_key = upstream_key
            return identity
        return await state.authenticator.identify(authorization)
    except AuthFailure as failure:
        raise _deny(ctx, failure.status, failure.reason, failure.message) from None


async def _form_targets(ctx: RequestContext, state: AuthState) -> list[Target]:
    """The tracked resources a multipart form names (read whole: the form is sent on only
    once checked)."""
    refs = form_references(ctx.operation.name) if ctx.operation is not None else ()
    if not refs or not ctx.request.body_exists:
        return []
    if ctx.body is None:
        ctx.body = await _read_form(ctx, state.max_form_bytes)
    kinds = {ref.steps[-1]: ref.kind for ref in refs}
    fields = form_fields(ctx.request.headers.get("Content-Type", ""), ctx.body, kinds)
    return [Target(kinds[name], value) for name, value in fields if value]


async def _read_form(ctx: RequestContext, limit: int) -> bytes:
    # Decoded as it is read (the core sends bodies upstream decoded, without their
    # Content-Encoding); the core's own upload limit applies.
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await ctx.request.content.readany()
        except web.RequestPayloadError:
            raise SidecarError(400, "The request body could not be read: it is truncated or "
                               "its Content-Encoding does not match its bytes.",
                               code="invalid_body") from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise SidecarError(413, f"Request body exceeds the upload limit of {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


async def _authorise(ctx: RequestContext) -> None:
    state = ctx.app[AUTH]
    identity = await _identify(ctx, state)
    ctx.identity = identity
    action = action_for_request(ctx.operation, ctx.method)
    ctx.log["auth_action"] = action
    if not state.roles.allows(identity.role, action):
        raise _deny(ctx, 403, "forbidden",
                    f"Your role ({identity.role}) does not allow this operation ({action}).")
    org_admin = state.roles.allows(identity.role, ORG_ADMIN)
    try:
        form = await _form_targets(ctx, state)
        await state.tenancy.check(ctx, identity, org_admin, form)
    except StoreUnreachable:
        raise _unavailable(ctx) from None
    except SidecarError as error:
        if error.status == 404:
            emit(ctx.app, "auth.denied", ctx, status=404, reason="not_visible")
            ctx.log["auth_denied"] = "not_visible"
        raise
    name = base_name(ctx.operation) if ctx.operation is not None else ""
    mine: dict[str, Any] = {"org_admin": org_admin}
    if name in LISTS:
        mine["list"] = plan_for(ctx, LISTS[name])
    if name in LISTS or name in CREATES:
        ctx.buffer_response = True
    ctx.state[_STATE] = mine


@hookimpl
def on_request(ctx: RequestContext) -> Any:
    """Authenticate (401/503), authorise (403) and check tenancy (404)."""
    return _authorise(ctx)


@hookimpl
def wrap_upstream(ctx: RequestContext, call: UpstreamCall) -> UpstreamCall | None:
    """For list operations, page through upstream to fill the caller's filtered page."""
    mine = ctx.state.get(_STATE)
    plan: ListPlan | None = mine.get("list") if mine else None
    if plan is None or ctx.identity is None:
        return None
    state = ctx.app[AUTH]
    identity, org_admin = ctx.identity, bool(mine and mine["org_admin"])

    async def visible(kind: str, items: list[Any]) -> list[Any]:
        try:
            return await state.tenancy.visible(identity, org_admin, kind, items)
        except StoreUnreachable:
            raise _unavailable(ctx) from None

    return wrap_list(ctx, call, plan, visible, state.scan_page_size, state.scan_max_items)


@hookimpl
def rewrite_response(ctx: RequestContext, body: Any) -> Any:
    """Answer lists with the filtered page; record who owns what a create just made."""
    mine = ctx.state.get(_STATE)
    if not mine or ctx.identity is None:
        return None
    plan: ListPlan | None = mine.get("list")
    if plan is not None:
        if plan.done:
            return plan.result
        if ctx.response_status is not None and ctx.response_status < 300:
            # Never let an unfiltered list through.
            return {"object": "error", "message": "The sidecar could not filter this list.",
                    "type": "upstream_error", "code": "upstream_bad_list"}
        return None
    status = ctx.response_status or 0
    if 200 <= status < 300:
        record = ctx.app[AUTH].tenancy.created(ctx, ctx.identity, body)
        if record is not None:
            mine["recorded"] = True
            return _record(ctx, record)
    return None


async def _record(ctx: RequestContext, record: Ownership) -> None:
    # Awaited before the body is released: the caller may use the new id at once.
    await ctx.app[AUTH].ownership.record(record)


@hookimpl
def on_stream_event(ctx: RequestContext, event: SSEEvent) -> StopObserving | None:
    """A streamed conversation start or restart announces its id in its first event: make it
    usable here at once (its durable record is written in ``on_end``). Other streams,
    and the rest of this one, are not needed."""
    mine = ctx.state.get(_STATE)
    if not mine or ctx.identity is None or mine.get("recorded") or ctx.operation is None \
            or CREATES.get(base_name(ctx.operation), ("",))[0] != CONVERSATION:
        return STOP_OBSERVING
    if event.event not in (None, "conversation.response.started"):
        return None
    data = event.json()
    if not isinstance(data, dict) or data.get("type", event.event) != \
            "conversation.response.started":
        return None
    conversation_id = data.get("conversation_id")
    if isinstance(conversation_id, str) and conversation_id:
        identity = ctx.identity
        record = Ownership(CONVERSATION, conversation_id, identity.org, identity.owner,
                           identity.key_id)
        mine["recorded"] = True
        mine["announced"] = record
        ctx.app[AUTH].ownership.announce(record)
        return STOP_OBSERVING
    return None


async def _persist_announced(ctx: RequestContext, record: Ownership) -> None:
    await ctx.app[AUTH].ownership.record(record)


@hookimpl
def on_end(ctx: RequestContext) -> Any:
    """Make the ownership a stream announced durable (awaited: the stream's last chunk goes
    out only after this; a stream that broke after announcing it still created it upstream),
    or forget the owner of a resource that was just deleted."""
    mine = ctx.state.get(_STATE)
    if not mine:
        return None
    announced: Ownership | None = mine.pop("announced", None)
    if announced is not None:
        return _persist_announced(ctx, announced)
    status = ctx.response_status or 0
    if not 200 <= status < 300:
        return None
    target = Tenancy.deleted(ctx)
    if target is None:
        return None
    return ctx.app[AUTH].ownership.delete(target.kind, target.resource_id)
