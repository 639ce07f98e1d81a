"""``/admin/conversations``: the organisation's stored conversations, searched by owner, agent
and date, and each one read back as a thread of its entries.

The admin API filters by owner, agent and start time (``since``); the end date (``to``) is
applied here to each page the API returns.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote

from aiohttp import web

from plugins.console.api import ApiError
from plugins.console.markup import (
    Html,
    definition_list,
    esc,
    field,
    fill,
    join,
    link,
    notice,
    query_string,
    table,
    when,
)
from plugins.console.thread import thread_html
from plugins.console.web import Visit

PAGE_SIZE = 50

_FILTER = """
<form class="filters" method="get" action="/admin/conversations">
$owner $agent $since $until <button type="submit">Search</button> $clear
</form>
"""


def _href(conversation_id: str) -> str:
    return "/admin/conversations/" + quote(conversation_id, safe="")


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


async def conversations_page(visit: Visit) -> web.StreamResponse:
    """``GET /admin/conversations``: conversations of ``owner``, of agent ``agent_id``,
    started from day ``from`` to day ``to`` (UTC, both included), in id order (``after``
    pages)."""
    query = visit.request.query
    owner, agent = query.get("owner", "").strip(), query.get("agent_id", "").strip()
    since, until, after = query.get("from", ""), query.get("to", ""), query.get("after", "")
    searched = any((owner, agent, since, until))
    form = fill(_FILTER, owner=field("Owner", "owner", owner),
                agent=field("Agent id", "agent_id", agent),
                since=field("From", "from", since, kind="date"),
                until=field("To", "to", until, kind="date"),
                clear=link("/admin/conversations", "Show all") if searched else "")
    problems = [f"{name}: expected a day such as 2025-01-31."
                for name, text in (("From", since), ("To", until)) if text and not _day(text)]
    if problems:
        return visit.page("Conversations", join([form, notice("error", " ".join(problems))]),
                          current="/admin/conversations", status=400)
    try:
        listing = await visit.api("listConversations", query={
            "owner": owner, "agent_id": agent, "since": since, "after": after,
            "limit": str(PAGE_SIZE)})
    except ApiError as error:
        if error.status != 400:
            raise
        return visit.page("Conversations", join([form, notice("error", error.message)]),
                          current="/admin/conversations", status=400)
    found = listing["data"]
    if until:
        found = [c for c in found if str(c.get("created_at") or "")[:10] <= until]
    rows = [[link(_href(c["id"]), c["id"], class_="conversation"),
             c.get("owner") or "", c.get("agent_id") or "", c.get("model") or "",
             c.get("name") or "", c.get("status") or "", when(c.get("created_at")),
             when(c.get("updated_at"))] for c in found]
    parts = [form, table(("Conversation", "Owner", "Agent", "Model", "Name", "Status",
                          "Started", "Last turn"), rows,
                         empty="No conversation matches." if searched
                         else "No conversations stored yet.")]
    if listing.get("has_more"):
        parts.append(fill('<p class="pager">$next</p>', next=link(
            "/admin/conversations" + query_string(owner=owner, agent_id=agent, to=until,
                                                  after=listing["next_after"],
                                                  **{"from": since}),
            "Next page →")))
    return visit.page("Conversations", join(parts), current="/admin/conversations")


def _facts(conversation: dict[str, Any]) -> Html:
    restarted = conversation.get("restarted_from_conversation_id")
    return definition_list({
        "Id": Html(f"<code>{esc(conversation['id'])}</code>"),
        "Owner": conversation.get("owner"), "Organisation": conversation.get("org"),
        "Agent": conversation.get("agent_id"), "Model": conversation.get("model"),
        "Name": conversation.get("name"), "Description": conversation.get("description"),
        "Status": conversation.get("status"),
        "Started": when(conversation.get("created_at")),
        "Last turn": when(conversation.get("updated_at")),
        "Restarted from": link(_href(restarted), restarted)
        if restarted else None,
    })


async def conversation_page(visit: Visit) -> web.StreamResponse:
    """``GET /admin/conversations/{conversation_id}``: the conversation and its entries as a
    thread."""
    conversation = await visit.api(
        "getConversation",
        params={"conversation_id": visit.request.match_info["conversation_id"]})
    entries = conversation.get("entries") or []
    body = join([
        fill('<p><a href="/admin/conversations">← All conversations</a></p>'),
        _facts(conversation),
        fill('<h2 id="thread-title">Entries <small>($count)</small></h2>', count=len(entries)),
        thread_html(entries),
    ])
    return visit.page(f"Conversation {conversation['id']}", body,
                      current="/admin/conversations")
