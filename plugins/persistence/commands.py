"""``mistral-sidecar conversations show ID`` and ``mistral-sidecar usage``: reading records back."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from plugins.persistence.records import canonical_time
from plugins.persistence.usage_report import (
    DEFAULT_GROUPS,
    GROUPS,
    SectionClash,
    format_sections,
    format_usage,
    parse_groups,
    read_usage,
    report_document,
    report_sections,
)
from plugins.store import run_with_database
from plugins.store.db import Database, Executor, Row
from proxy.chain import PluginChain
from proxy.hookspecs import UsageSection
from proxy.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``conversations`` and ``usage`` commands."""
    conversations = subparsers.add_parser(
        "conversations", help="read stored conversations",
        description="Read conversations recorded by the persistence plugin.")
    actions = conversations.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="print a conversation and its entries",
                              description="Print a stored conversation and every entry of it, "
                              "oldest first.")
    show.add_argument("conversation_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.add_argument("--config", metavar="FILE", help="YAML configuration file")
    show.set_defaults(handler=cmd_conversations_show)

    usage = subparsers.add_parser(
        "usage", help="print requests, tokens and cost per owner and model",
        description="Sum the usage log (chat, FIM, embeddings, agent completions and "
        "conversations) per owner and model, or per the groups --by names. A group's cost "
        "is unknown when a request in it reported tokens of a model without a price "
        "(counted as unpriced). Plugins add sections after the table (the budgets plugin: "
        "the budgets in force and their spend this period).")
    usage.add_argument("--by", metavar="GROUPS", type=_groups, default=DEFAULT_GROUPS,
                       help="comma-separated groups: " + ", ".join(GROUPS)
                       + f" (UTC days); default {','.join(DEFAULT_GROUPS)}")
    usage.add_argument("--since", metavar="DATE",
                       help="only requests at or after DATE (YYYY-MM-DD or ISO-8601, UTC "
                       "unless it names a zone)")
    usage.add_argument("--owner", help="only this owner")
    usage.add_argument("--json", action="store_true",
                       help="print the usage rows as a JSON list instead of a table")
    usage.add_argument("--sections", action="store_true",
                       help='with --json: print {"usage": [rows], "sections": {name: {"title", '
                       '"rows"}}} with the sections plugins add (the table always shows them)')
    usage.add_argument("--config", metavar="FILE", help="YAML configuration file")
    usage.set_defaults(handler=cmd_usage)


def _run(settings: Settings, work: Any) -> int:
    return run_with_database(settings, work)


# --- conversations show ----------------------------------------------------------------------


def cmd_conversations_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print one conversation with its entries."""

    async def work(db: Database) -> int:
        found = await read_conversation(db, args.conversation_id)
        if found is None:
            print(f"mistral-sidecar: conversation {args.conversation_id} is not in the store",
                  file=sys.stderr)
            return 1
        conversation, entries = found
        if args.json:
            print(json.dumps({"conversation": conversation, "entries": entries},
                             ensure_ascii=False, indent=2))
        else:
            sys.stdout.write(format_conversation(conversation, entries))
        return 0

    return _run(settings, work)


async def read_conversation(db: Executor, conversation_id: str
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A stored conversation and its entries, oldest first, as plain rows
    (:func:`plain_row`); ``None`` when the store does not have it. ``conversations show``
    and the admin API both read conversations back through this."""
    conversation = await db.fetchone("SELECT * FROM conversations WHERE id = ?",
                                     (conversation_id,))
    if conversation is None:
        return None
    entries = await db.fetchall(
        "SELECT * FROM conversation_entries WHERE conversation_id = ? ORDER BY seq",
        (conversation_id,))
    return plain_row(conversation), [plain_row(e) for e in entries]


def format_conversation(conversation: Row, entries: list[Row]) -> str:
    """A conversation and its entries as readable text."""
    c = conversation
    lines = [f"conversation {c['id']}  status {c['status']}  owner {c['owner_id']}"]
    who = [f"agent {c['agent_id']}" if c.get("agent_id") else "",
           f"model {c['model']}" if c.get("model") else "",
           f"name {c['name']!r}" if c.get("name") else ""]
    if any(who):
        lines.append("  ".join(w for w in who if w))
    lines.append(f"created {c['created_at']}  updated {c['updated_at']}")
    if c.get("description"):
        lines.append(f"description: {c['description']}")
    if c.get("metadata"):
        lines.append(f"metadata: {json.dumps(c['metadata'], ensure_ascii=False)}")
    if c.get("restarted_from_conversation_id"):
        lines.append(f"restarted from {c['restarted_from_conversation_id']} at entry "
                     f"{c.get('restarted_from_entry_id') or '?'}")
    lines.append(f"{len(entries)} entries")
    for e in entries:
        detail = [f"[{e['seq']}]", e["created_at"] or "", e["type"]]
        for label, key in (("role", "role"), ("model", "model"), ("agent", "agent_id"),
                           ("tool", "tool_name"), ("call", "tool_call_id")):
            if e.get(key):
                detail.append(f"{label}={e[key]}")
        detail.append(f"tokens={e['prompt_tokens']}/{e['completion_tokens']}")
        detail.append(f"id={e['id']}")
        lines.append("")
        lines.append("  ".join(detail))
        text = e.get("content")
        if text is None and e.get("content_json") is not None:
            text = json.dumps(e["content_json"], ensure_ascii=False)
        for line in (text or "").splitlines() or [""]:
            lines.append(f"    {line}")
    return "\n".join(lines) + "\n"


# --- usage -----------------------------------------------------------------------------------


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    """Print requests, tokens and cost per owner and model, or per the ``--by`` groups."""
    since = None
    if args.since:
        since = parse_since(args.since)
        if since is None:
            print(f"mistral-sidecar: --since {args.since!r}: expected a date such as "
                  "2025-01-31 or an ISO-8601 time", file=sys.stderr)
            return 2

    owner = args.owner or None

    async def work(db: Database) -> int:
        summary = await read_usage(db, db.dialect, args.by, since=since, owner=owner)
        sections: list[UsageSection] = []
        # Plain --json is the list scripts read: no plugin is asked, nothing is added.
        if args.sections or not args.json:
            try:
                sections = await usage_sections(settings, db, owner=owner, since=since)
            except SectionClash as exc:
                print(f"mistral-sidecar: usage: {exc}", file=sys.stderr)
                return 1
        if args.json:
            document = report_document(summary, sections) if args.sections else summary
            print(json.dumps(document, indent=2))
        else:
            sys.stdout.write(format_usage(summary, args.by) + format_sections(sections))
        return 0

    return _run(settings, work)


async def usage_sections(settings: Settings, db: Database, *, owner: str | None,
                         since: str | None) -> list[UsageSection]:
    """What the plugins in the chain add to the report (``usage_report_sections``)."""
    # The command is handed the settings only; the chain they name is loaded already.
    chain = PluginChain(list(settings["plugins.chain"]))
    return await report_sections(chain, settings=settings, db=db, owner=owner, since=since)


def _groups(text: str) -> tuple[str, ...]:
    """``--by``: known group names, each once, in the order given."""
    groups = parse_groups(text)
    if groups is None:
        raise argparse.ArgumentTypeError(
            f"expected some of {', '.join(GROUPS)} separated by commas, got {text!r}")
    return groups


def parse_since(text: str) -> str | None:
    """``--since`` as canonical timestamp text; ``None`` if it is not a date."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return canonical_time(moment)


def plain_row(row: Row) -> dict[str, Any]:
    """A row with canonical timestamps and parsed JSON, the same from both databases."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_at"):
            value = canonical_time(value, None if value is None else str(value))
        elif key in ("content_json", "metadata", "tools", "completion_args",
                     "content") and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out
