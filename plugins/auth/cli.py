"""``mistral-sidecar keys ...``, ``mistral-sidecar adopt`` and ``mistral-sidecar agents adopt``."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

from plugins.auth.keys import fingerprint
from plugins.auth.keystore import KeyRecord, KeyStore, key_problem
from plugins.auth.ownership import AGENT, KINDS, ORG_SCOPED, Ownership, upsert
from plugins.store import run_with_database
from plugins.store.db import Database, Executor
from proxy.settings import Settings

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_expiry(text: str, now: float) -> float:
    """``--expires``: a duration (``30d``, ``12h``, ``90m``, ``45s``, ``2w``), an ISO date
    (the key stops working at 00:00 UTC that day) or an ISO date-time (naive means UTC).

    Returns epoch seconds; raises ValueError for other input or for a moment already past.
    """
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        moment = now + int(match.group(1)) * _UNITS[match.group(2)]
    else:
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
            else:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
        except ValueError:
            raise ValueError(
                f"--expires: expected a date (2026-01-31), a date-time (2026-01-31T12:00:00Z) "
                f"or a duration (30d, 12h), got {text!r}") from None
        moment = parsed.timestamp()
    if moment <= now:
        raise ValueError(f"--expires: {text!r} is not in the future")
    return moment


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(settings: Settings, body: Callable[[Database], Awaitable[int]]) -> int:
    """Open the database (migrating if allowed), run ``body``, close."""
    return run_with_database(settings, body)


def _fail(message: str, code: int = 2) -> int:
    print(f"mistral-sidecar: {message}", file=sys.stderr)
    return code


# --- handlers --------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a key; the key itself is the last line printed."""
    problem = key_problem(args.owner, args.role, args.org, settings["auth.roles"], args.name)
    if problem is not None:
        return _fail(f"--{problem[0]}: {problem[1]}")
    expires_at = None
    if args.expires:
        try:
            expires_at = parse_expiry(args.expires, time.time())
        except ValueError as exc:
            return _fail(str(exc))

    async def body(db: Database) -> int:
        record, key = await KeyStore(db).create(args.owner, args.role, args.org, args.name,
                                                expires_at)
        print(f"created key {record.key_id} for owner {record.owner} (org {record.org}, "
              f"role {record.role}, expires {_when(record.expires_at)})")
        print("Store this key now; it cannot be shown again:")
        print(key)
        return 0

    return _run(settings, body)


def _describe(record: KeyRecord, now: float) -> dict[str, Any]:
    return {
        "key_id": record.key_id, "owner": record.owner, "org": record.org,
        "role": record.role, "name": record.name, "status": record.status(now),
        "created_at": _when(record.created_at), "expires_at": _when(record.expires_at),
        "revoked_at": None if record.revoked_at is None else _when(record.revoked_at),
        "rotated_at": None if record.rotated_at is None else _when(record.rotated_at),
    }


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """List keys (ids and metadata, never secrets)."""

    async def body(db: Database) -> int:
        now = time.time()
        rows = [_describe(r, now) for r in await KeyStore(db).list()]
        if args.format == "json":
            print(json.dumps(rows, indent=2))
            return 0
        columns = ("key_id", "owner", "org", "role", "status", "expires_at", "name")
        table = [columns] + [tuple(str(r[c] if r[c] is not None else "-") for c in columns)
                             for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return _run(settings, body)


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a key (every replica refuses it within the cache TTL)."""

    async def body(db: Database) -> int:
        if not await KeyStore(db).revoke(args.key_id):
            return _fail(f"no key {args.key_id!r}", 1)
        print(f"revoked key {args.key_id}; every replica refuses it within "
              f"{settings['auth.cache_ttl_seconds']:g} s")
        return 0

    return _run(settings, body)


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Give a key a new secret; the new key is the last line printed."""

    async def body(db: Database) -> int:
        key = await KeyStore(db).rotate(args.key_id)
        if key is None:
            return _fail(f"no active key {args.key_id!r}", 1)
        print(f"rotated key {args.key_id}; the old secret stops working within "
              f"{settings['auth.cache_ttl_seconds']:g} s")
        print("Store this key now; it cannot be shown again:")
        print(key)
        return 0

    return _run(settings, body)


def cmd_fingerprint(args: argparse.Namespace, settings: Settings) -> int:
    """Print the passthrough identity of a Mistral key read from standard input."""
    key = sys.stdin.readline().strip()
    if not key:
        return _fail("expected a Mistral API key on standard input")
    print(fingerprint(key))
    return 0


def adoption_problem(kind: str, resource_id: str, org: str, owner: str
                     ) -> tuple[str, str] | None:
    """Why ``resource_id`` cannot be put under ``org`` and ``owner``, as ``(field,
    message)``; ``None`` when it can. ``adopt`` and the admin API ask this same question."""
    if kind not in KINDS:
        return "kind", f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})"
    for field, value in (("org", org), ("owner", owner), ("id", resource_id)):
        if not value.strip():
            return field, "must not be empty"
    return None


async def adopt(db: Executor, kind: str, resource_id: str, org: str, owner: str) -> Ownership:
    """Record ``org`` and ``owner`` as the owners of a resource (check it with
    :func:`adoption_problem` first); returns the record written."""
    record = Ownership(kind, resource_id, org, owner, None)
    # Replaces any record, however recent: the operator's word is final.
    await upsert(db, record, replace_newer=True)
    return record


def _adopt(kind: str, resource_id: str, org: str, owner: str, settings: Settings) -> int:
    problem = adoption_problem(kind, resource_id, org, owner)
    if problem is not None:
        field, message = problem
        return _fail(f"{'the resource id' if field == 'id' else '--' + field}: {message}")

    async def body(db: Database) -> int:
        await adopt(db, kind, resource_id, org, owner)
        whom = f"org {org}" if kind in ORG_SCOPED else f"{owner} in org {org}"
        print(f"{kind} {resource_id} now belongs to {whom}; every replica sees it within "
              f"{max(float(settings['auth.cache_ttl_seconds']), 30.0):g} s")
        return 0

    return _run(settings, body)


def cmd_adopt(args: argparse.Namespace, settings: Settings) -> int:
    """Put a resource created outside the sidecar (or owned by someone else) under an
    organisation and owner."""
    return _adopt(args.kind, args.resource_id, args.org, args.owner, settings)


def cmd_adopt_agent(args: argparse.Namespace, settings: Settings) -> int:
    """``agents adopt``: :func:`cmd_adopt` for an agent."""
    return _adopt(AGENT, args.agent_id, args.org, args.owner, settings)


# --- parsers ---------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``keys`` and ``agents`` command groups and ``adopt``."""
    keys = subparsers.add_parser(
        "keys", help="manage sidecar API keys",
        description="Create, list, revoke and rotate the API keys callers present to the "
        "sidecar. Keys are stored hashed; a new key is printed once, as the last line.")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    keys_sub.required = True

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", metavar="FILE", help="YAML configuration file")

    create = keys_sub.add_parser("create", help="create a key and print it once")
    common(create)
    create.add_argument("--owner", required=True, help="who the key belongs to")
    create.add_argument("--role", required=True, help="role (admin, user, read_only, or one "
                        "from auth.roles)")
    create.add_argument("--org", default="default", help="organisation (default: default)")
    create.add_argument("--name", help="a label for the key")
    create.add_argument("--expires", metavar="DATE",
                        help="expiry: 2026-01-31, 2026-01-31T12:00:00Z or a duration like 90d")
    create.set_defaults(handler=cmd_create)

    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    common(listing)
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(handler=cmd_list)

    revoke = keys_sub.add_parser("revoke", help="revoke a key for good")
    common(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(handler=cmd_revoke)

    rotate = keys_sub.add_parser("rotate", help="give a key a new secret (old one stops working)")
    common(rotate)
    rotate.add_argument("key_id", metavar="KEY_ID")
    rotate.set_defaults(handler=cmd_rotate)

    fp = keys_sub.add_parser(
        "fingerprint", help="print the passthrough identity of a Mistral key (read from stdin)")
    common(fp)
    fp.set_defaults(handler=cmd_fingerprint)

    agents = subparsers.add_parser("agents", help="manage agent ownership")
    agents_sub = agents.add_subparsers(dest="agents_command", metavar="ACTION")
    agents_sub.required = True
    adopt = agents_sub.add_parser(
        "adopt", help="put an agent created outside the sidecar under an organisation")
    common(adopt)
    adopt.add_argument("agent_id", metavar="AGENT_ID")
    adopt.add_argument("--org", required=True, help="organisation that will own the agent")
    adopt.add_argument("--owner", default="adopted",
                       help="recorded creator (informational; default: adopted)")
    adopt.set_defaults(handler=cmd_adopt_agent)

    any_kind = subparsers.add_parser(
        "adopt", help="put a resource created outside the sidecar under an organisation",
        description="Record who owns an agent, conversation, file or batch job that the "
        "sidecar has no ownership record for (only admins of auth.unowned_org see such "
        "resources). Agents belong to the whole organisation; the other kinds to --owner "
        "(the owner name of a key, as in `keys create --owner`).")
    common(any_kind)
    any_kind.add_argument("resource_id", metavar="ID")
    any_kind.add_argument("--kind", required=True, choices=KINDS,
                          help="what the id names")
    any_kind.add_argument("--org", required=True, help="organisation that will own it")
    any_kind.add_argument("--owner", default="adopted",
                          help="owner within the organisation (default: adopted, which only "
                          "the organisation's admins can see for kinds other than agent)")
    any_kind.set_defaults(handler=cmd_adopt)
