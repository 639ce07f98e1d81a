"""Incremental server-sent-events parsing and reassembly of Mistral streams.

The forwarder writes every chunk to the caller first and only then feeds it here, so parsing
never delays a frame. Two stream dialects are reassembled into the JSON object the
non-streamed call would have returned: chat/FIM/agents completions (``data: {chunk}`` frames,
``data: [DONE]``) and conversations (named ``event:`` frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy import jsoncodec


@dataclass(slots=True)
class SSEEvent:
    """One server-sent event: its ``event`` name (``None`` when unnamed) and ``data`` text."""

    event: str | None
    data: str
    id: str | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON, or ``None`` (``[DONE]``, or not JSON)."""
        if not self.data or self.data == "[DONE]":
            return None
        try:
            return jsoncodec.loads(self.data)
        except ValueError:
            return None


class SSEParser:
    """Turns arbitrary byte chunks into complete events (WHATWG event-stream rules)."""

    __slots__ = ("_buffer", "_pending_cr")

    def __init__(self) -> None:
        self._buffer = b""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return the events completed by them (possibly none)."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        # find(), not ``in``: bytes.__contains__ first tries its argument as an integer and
        # pays for a formatted TypeError every time (this runs for every chunk of a stream).
        if chunk.find(b"\r") != -1:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk
        if buffer.find(b"\n\n") == -1:
            self._buffer = buffer
            return []
        *blocks, self._buffer = buffer.split(b"\n\n")
        events = []
        for block in blocks:
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        return events


def _parse_block(block: bytes) -> SSEEvent | None:
    name: str | None = None
    event_id: str | None = None
    data_lines: list[str] = []
    for raw_line in block.decode("utf-8", errors="replace").split("\n"):
        if not raw_line or raw_line.startswith(":"):
            continue
        field_name, _, value = raw_line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field_name == "data":
            data_lines.append(value)
        elif field_name == "event":
            name = value
        elif field_name == "id":
            event_id = value
    if not data_lines and name is None:
        return None
    return SSEEvent(name, "\n".join(data_lines), event_id)


class ChatStreamAssembler:
    """Rebuilds a ``chat.completion`` object from ``chat.completion.chunk`` frames."""

    def __init__(self) -> None:
        self.base: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None
        self.done = False
        #: Whether an event carried output yet (content or a tool call): the first token.
        self.has_output = False
        #: Choices' deltas carrying output, and their characters (text and tool-call
        #: arguments): what an estimate of usage counts when the stream reports none.
        self.output_events = 0
        self.output_chars = 0

    def add(self, event: SSEEvent) -> None:
        """Fold one event in."""
        if event.data == "[DONE]":
            self.done = True
            return
        chunk = event.json()
        if not isinstance(chunk, dict):
            return
        for key in ("id", "created", "model"):
            if key in chunk and key not in self.base:
                self.base[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = int(choice.get("index", 0) or 0)
        slot = self.choices.setdefault(
            index, {"index": index, "message": {"role": "assistant", "content": ""},
                    "finish_reason": None})
        message = slot["message"]
        delta = choice.get("delta") or {}
        if delta.get("role"):
            message["role"] = delta["role"]
        content = delta.get("content")
        if content or delta.get("tool_calls"):
            self.has_output = True
            self.output_events += 1
            self.output_chars += _output_chars(content)
        if isinstance(content, str):
            if isinstance(message["content"], str):
                message["content"] += content
            else:
                message["content"].append({"type": "text", "text": content})
        elif isinstance(content, list):
            if isinstance(message["content"], str):
                message["content"] = (
                    [{"type": "text", "text": message["content"]}] if message["content"] else []
                )
            message["content"].extend(content)
        for call in delta.get("tool_calls") or ():
            _merge_tool_call(message.setdefault("tool_calls", []), call)
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                self.output_chars += _output_chars(call["function"].get("arguments"))
        if choice.get("finish_reason"):
            slot["finish_reason"] = choice["finish_reason"]

    def result(self) -> dict[str, Any]:
        """The reassembled completion."""
        out: dict[str, Any] = {"object": "chat.completion", **self.base}
        out["choices"] = [self.choices[i] for i in sorted(self.choices)]
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def _merge_tool_call(calls: list[dict[str, Any]], delta: Any) -> None:
    if not isinstance(delta, dict):
        return
    index = delta.get("index")
    target = None
    for call in calls:
        if (index is not None and call.get("index") == index) or (
            delta.get("id") and call.get("id") == delta.get("id")
        ):
            target = call
            break
    if target is None:
        target = {"id": delta.get("id"), "type": delta.get("type", "function"),
                  "function": {"name": "", "arguments": ""}}
        if index is not None:
            target["index"] = index
        calls.append(target)
    function = delta.get("function") or {}
    if function.get("name"):
        target["function"]["name"] += function["name"]
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        target["function"]["arguments"] += arguments
    elif isinstance(arguments, dict):
        target["function"]["arguments"] = arguments


_ENTRY_EVENTS = {
    "message.output.delta": "message.output",
    "function.call.delta": "function.call",
    "tool.execution.started": "tool.execution",
    "tool.execution.delta": "tool.execution",
    "tool.execution.done": "tool.execution",
    "agent.handoff.started": "agent.handoff",
    "agent.handoff.done": "agent.handoff",
}


class ConversationStreamAssembler:
    """Rebuilds a ``conversation.response`` object from conversation stream events.

    Entries are keyed by their id and kept in order of first appearance; deltas are
    concatenated. ``error`` holds a ``conversation.response.error`` event, if any.
    """

    def __init__(self) -> None:
        self.conversation_id: str | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self.usage: Any = None
        self.error: dict[str, Any] | None = None
        self.started_at: str | None = None
        self.done_at: str | None = None
        #: Whether an event carried output yet (message text or function-call arguments).
        self.has_output = False
        #: Events carrying output, and their characters: what an estimate of usage counts
        #: when the stream reports none.
        self.output_events = 0
        self.output_chars = 0

    def add(self, event: SSEEvent) -> None:
        """Fold one event in."""
        data = event.json()
        if not isinstance(data, dict):
            return
        kind = event.event or data.get("type")
        if kind == "conversation.response.started":
            self.conversation_id = data.get("conversation_id")
            self.started_at = data.get("created_at")
        elif kind == "conversation.response.done":
            self.usage = data.get("usage")
            self.done_at = data.get("created_at")
        elif kind == "conversation.response.error":
            self.error = data
        elif kind in _ENTRY_EVENTS:
            self._add_entry_event(kind, data)

    def _add_entry_event(self, kind: str, data: dict[str, Any]) -> None:
        entry_id = str(data.get("id") or f"output-{data.get('output_index', 0)}")
        entry = self.entries.get(entry_id)
        if entry is None:
            entry = {"object": "entry", "type": _ENTRY_EVENTS[kind], "id": entry_id,
                     "created_at": data.get("created_at")}
            self.entries[entry_id] = entry
        for key in ("model", "agent_id", "role", "name", "tool_call_id", "previous_agent_id",
                    "previous_agent_name", "next_agent_id", "next_agent_name",
                    "confirmation_status", "info"):
            if data.get(key) is not None:
                entry[key] = data[key]
        if kind in ("tool.execution.done", "agent.handoff.done"):
            entry["completed_at"] = data.get("created_at")
        content = data.get("content")
        if kind == "message.output.delta" and content is not None:
            _append_content(entry, content)
            self.has_output = self.has_output or bool(content)
            self._count_output(content)
        arguments = data.get("arguments")
        if isinstance(arguments, str) and kind in ("function.call.delta",
                                                   "tool.execution.started",
                                                   "tool.execution.delta"):
            entry["arguments"] = entry.get("arguments", "") + arguments
            if kind == "function.call.delta" and arguments:
                self.has_output = True
                self._count_output(arguments)

    def _count_output(self, content: Any) -> None:
        chars = _output_chars(content)
        if chars:
            self.output_events += 1
            self.output_chars += chars

    def result(self) -> dict[str, Any]:
        """The reassembled conversation response."""
        outputs = list(self.entries.values())
        for entry in outputs:
            entry.setdefault("completed_at", self.done_at)
        out: dict[str, Any] = {"object": "conversation.response",
                               "conversation_id": self.conversation_id, "outputs": outputs}
        if self.usage is not None:
            out["usage"] = self.usage
        if self.error is not None:
            out["error"] = self.error
        return out


def _append_content(entry: dict[str, Any], content: Any) -> None:
    current = entry.get("content")
    if isinstance(content, str):
        if current is None:
            entry["content"] = content
        elif isinstance(current, str):
            entry["content"] = current + content
        else:
            current.append({"type": "text", "text": content})
    else:
        chunks = content if isinstance(content, list) else [content]
        if current is None:
            entry["content"] = list(chunks)
        elif isinstance(current, str):
            entry["content"] = ([{"type": "text", "text": current}] if current else []) + chunks
        else:
            current.extend(chunks)


def _output_chars(content: Any) -> int:
    """Characters of output in a delta's ``content`` (text, or a list of parts) or a tool
    call's ``arguments``; 0 for anything else."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part["text"]) for part in content
                   if isinstance(part, dict) and isinstance(part.get("text"), str))
    return 0


def assembler_for(first_event: SSEEvent) -> ChatStreamAssembler | ConversationStreamAssembler:
    """Choose the reassembler from the first event: named events are conversations."""
    if first_event.event and first_event.event.startswith(("conversation.", "message.",
                                                           "tool.", "agent.", "function.")):
        return ConversationStreamAssembler()
    return ChatStreamAssembler()
