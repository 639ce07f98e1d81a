"""A stored conversation's entries as a thread: messages as speech, tool calls with their name
and arguments, tool results, built-in tool runs and agent handoffs; every text escaped.

Entries are the persistence plugin's rows as the admin API answers them: ``type``, ``role``,
``content`` (the entry's text: a message's, a call's arguments, a result), ``content_json``
(the rest of the entry), ``tool_name``, ``tool_call_id``, tokens and times.
"""

from __future__ import annotations

import json
from typing import Any

from plugins.console.markup import Html, fill, join, when

_ENTRY = """<article class="entry $kind" id="entry-$seq">
<header><span class="who">$label</span> $detail</header>
$body
</article>"""


def _text(value: Any) -> str:
    """An entry's text (the store may hand back JSON-looking text already parsed)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2)


def _pretty(text: str) -> str:
    """JSON arguments indented; anything else as it is."""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=2)
    except ValueError:
        return text


def _rest(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's fields without columns of their own (``content_json``), as a mapping."""
    rest = entry.get("content_json")
    return rest if isinstance(rest, dict) else {}


def _block(text: str, kind: str = "text") -> Html:
    return fill('<pre class="$kind">$text</pre>', kind=kind, text=text) if text else Html("")


def _detail(entry: dict[str, Any]) -> Html:
    bits: list[Any] = []
    for label, key in (("model", "model"), ("agent", "agent_id")):
        if entry.get(key):
            bits.append(fill('<span class="tag">$label $value</span>', label=label,
                             value=entry[key]))
    tokens = int(entry.get("prompt_tokens") or 0), int(entry.get("completion_tokens") or 0)
    if any(tokens):
        bits.append(fill('<span class="tag">tokens $p/$c</span>', p=tokens[0], c=tokens[1]))
    bits.append(when(entry.get("created_at")))
    return join(bits, " ")


def _call(entry: dict[str, Any], label: str) -> Html:
    name = entry.get("tool_name") or _rest(entry).get("name") or "?"
    call_id = entry.get("tool_call_id")
    head = fill('<p class="call">$label <code class="tool-name">$name</code>$id</p>',
                label=label, name=name,
                id=fill(' <span class="tag">call $id</span>', id=call_id) if call_id else "")
    return join([head, _block(_pretty(_text(entry.get("content"))), "json")])


def entry_html(entry: dict[str, Any]) -> Html:
    """One entry of the thread."""
    kind = str(entry.get("type") or "")
    role = str(entry.get("role") or "")
    rest = _rest(entry)
    text = _text(entry.get("content"))
    if kind == "message.input" or (kind.startswith("message.") and role != "assistant"):
        css, label, body = "message user", (role or "user").capitalize(), _block(text)
    elif kind == "message.output":
        css, label, body = "message assistant", "Assistant", _block(text)
    elif kind == "function.call":
        css, label, body = "tool call", "Tool call", _call(entry, "Calls")
    elif kind == "tool.execution":
        css, label, body = "tool call", "Built-in tool", _call(entry, "Runs")
        if rest.get("info"):
            body = join([body, _block(_text(rest["info"]), "json")])
    elif kind == "function.result":
        call_id = entry.get("tool_call_id")
        head = fill('<p class="call">Result of call <code>$id</code></p>', id=call_id or "?")
        css, label = "tool result", "Tool result"
        body = join([head, _block(_pretty(text or _text(rest.get("result"))), "json")])
    elif kind == "agent.handoff":
        css, label = "handoff", "Handoff"
        body = fill('<p class="call">From $from to $to</p>',
                    **{"from": rest.get("previous_agent_name") or rest.get("previous_agent_id")
                       or "?",
                       "to": rest.get("next_agent_name") or rest.get("next_agent_id") or "?"})
    else:
        css, label = "other", kind or "entry"
        body = _block(text or _text(entry.get("content_json")), "json")
    if not body:
        body = fill('<p class="empty">(no text)</p>')
    return fill(_ENTRY, kind=css, seq=entry.get("seq", ""), label=label,
                detail=_detail(entry), body=body)


def thread_html(entries: list[dict[str, Any]]) -> Html:
    """Every entry, oldest first."""
    if not entries:
        return fill('<p class="empty">No entries stored for this conversation.</p>')
    return fill('<ol class="thread">$items</ol>',
                items=join(fill("<li>$entry</li>", entry=entry_html(e)) for e in entries))
