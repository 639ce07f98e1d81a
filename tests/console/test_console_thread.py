"""Every kind of stored entry reads as part of a thread, its text escaped: messages, function
calls with name and arguments, results, built-in tool runs, handoffs and kinds the console
does not know yet."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from plugins.console.thread import thread_html


def _entry(seq: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "type": kind, "created_at": "2025-01-31T12:00:00.000000Z",
            "prompt_tokens": 0, "completion_tokens": 0, **fields}


def _articles(html: str) -> list[str]:
    """Each entry's text as a reader sees it: tags stripped, entities decoded, whitespace
    collapsed."""
    found = re.findall(r"<article.*?</article>", html, re.S)
    return [" ".join(unescape(re.sub(r"<[^>]+>", " ", a)).split()) for a in found]


def test_every_entry_kind_reads_as_a_thread() -> None:
    html = thread_html([
        _entry(0, "message.input", role="user", content="Book <b>two</b> seats"),
        _entry(1, "function.call", tool_name="book", tool_call_id="c1",
               content={"seats": 2}, model="mistral-large-latest"),
        _entry(2, "function.result", tool_call_id="c1", content="ok & done"),
        _entry(3, "tool.execution", tool_name="web_search", content='{"q": "trains"}',
               content_json={"name": "web_search", "info": {"hits": 3}}),
        _entry(4, "agent.handoff", content_json={"previous_agent_name": "triage",
                                                 "next_agent_name": "billing"}),
        _entry(5, "message.output", role="assistant", content="Done.", agent_id="ag_1",
               completion_tokens=2),
        _entry(6, "future.kind", content_json={"x": "<i>y</i>"}),
    ])
    assert "<b>" not in html and "<i>" not in html
    assert "&lt;b&gt;two&lt;/b&gt;" in html and "&amp; done" in html
    user, call, result, tool, handoff, answer, other = _articles(html)
    assert user.startswith("User") and "Book <b>two</b> seats" in user
    assert call.startswith("Tool call") and "book" in call and "call c1" in call
    assert '"seats": 2' in call and "model mistral-large-latest" in call
    assert result.startswith("Tool result") and "Result of call c1" in result
    assert tool.startswith("Built-in tool") and "web_search" in tool and '"hits": 3' in tool
    assert handoff == "Handoff 2025-01-31 12:00:00 From triage to billing"
    assert answer.startswith("Assistant") and "agent ag_1" in answer and "tokens 0/2" in answer
    assert other.startswith("future.kind") and '"x": "<i>y</i>"' in other


def test_a_conversation_without_entries_says_so() -> None:
    assert "No entries stored" in thread_html([])
