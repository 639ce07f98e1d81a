"""Where user-controlled text lives in the request bodies the guard inspects.

Per operation (``*_stream`` twins included):

- ``chat.complete``, ``agents.complete``: every message's ``content`` (any role), as a string
  or as a list of chunks whose ``text`` is a string;
- ``fim.complete``: ``prompt`` and ``suffix``;
- ``conversations.start``: ``inputs`` and ``instructions``;
- ``conversations.append``, ``conversations.restart``: ``inputs``;
- ``agents.create``, ``agents.update``: ``instructions`` and ``description``.

Conversation ``inputs`` is a string or a list of entries: each entry's ``content`` (string or
chunks, whatever the entry type) and each ``function.result`` entry's ``result``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["GUARDED_OPERATIONS", "TextField", "text_fields"]


@dataclass(slots=True)
class TextField:
    """A string inside a request body: ``container[key]``, named ``path`` in reports."""

    container: dict[str, Any]
    key: str
    path: str

    @property
    def value(self) -> str:
        """The current text."""
        text: str = self.container[self.key]
        return text

    def replace(self, text: str) -> None:
        """Put ``text`` in place of the current value."""
        self.container[self.key] = text


def _string(body: dict[str, Any], key: str, path: str) -> Iterator[TextField]:
    if isinstance(body.get(key), str):
        yield TextField(body, key, path)


def _content(holder: dict[str, Any], path: str) -> Iterator[TextField]:
    content = holder.get("content")
    if isinstance(content, str):
        yield TextField(holder, "content", path)
    elif isinstance(content, list):
        for index, chunk in enumerate(content):
            if isinstance(chunk, dict):
                yield from _string(chunk, "text", f"{path}[{index}].text")


def _messages(body: dict[str, Any]) -> Iterator[TextField]:
    messages = body.get("messages")
    if isinstance(messages, list):
        for index, message in enumerate(messages):
            if isinstance(message, dict):
                yield from _content(message, f"messages[{index}].content")


def _inputs(body: dict[str, Any]) -> Iterator[TextField]:
    inputs = body.get("inputs")
    if isinstance(inputs, str):
        yield TextField(body, "inputs", "inputs")
    elif isinstance(inputs, list):
        for index, entry in enumerate(inputs):
            if not isinstance(entry, dict):
                continue
            yield from _content(entry, f"inputs[{index}].content")
            if entry.get("type") == "function.result":
                yield from _string(entry, "result", f"inputs[{index}].result")


def _fim(body: dict[str, Any]) -> Iterator[TextField]:
    yield from _string(body, "prompt", "prompt")
    yield from _string(body, "suffix", "suffix")


def _conversation_start(body: dict[str, Any]) -> Iterator[TextField]:
    yield from _inputs(body)
    yield from _string(body, "instructions", "instructions")


def _agent(body: dict[str, Any]) -> Iterator[TextField]:
    yield from _string(body, "instructions", "instructions")
    yield from _string(body, "description", "description")


_WALKERS: dict[str, Callable[[dict[str, Any]], Iterator[TextField]]] = {
    "chat.complete": _messages,
    "agents.complete": _messages,
    "fim.complete": _fim,
    "conversations.start": _conversation_start,
    "conversations.append": _inputs,
    "conversations.restart": _inputs,
    "agents.create": _agent,
    "agents.update": _agent,
}

#: Operation names (without ``_stream``) whose bodies the guard inspects.
GUARDED_OPERATIONS = frozenset(_WALKERS)


def text_fields(operation_name: str, body: Any) -> Iterator[TextField]:
    """The user-controlled strings of ``body`` for ``operation_name``, in document order."""
    walker = _WALKERS.get(operation_name.removesuffix("_stream"))
    if walker is not None and isinstance(body, dict):
        yield from walker(body)
