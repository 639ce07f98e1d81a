"""Where text a model reads lives in a request body, read from the generated field table.

:mod:`plugins.guard.fields_table` (generated from the OpenAPI spec by
:mod:`plugins.guard.gen_fields`) lists, per operation, the paths of every string a model reads:
messages and their chunks, names, tool and function descriptions and arguments, agent and
conversation fields, instructions, FIM prompt and suffix, judge and connector prompts, ...
Three kinds of rows:

- ``text``: the string at the path (``messages[].content`` when it is a string);
- ``tree``: every string inside the value at the path, object keys included (function-call
  arguments, a tool's JSON schema, metadata);
- ``embedded``: bodies of another operation (a batch job's inline ``requests[].body``), read
  with the rows of the operation its ``endpoint`` names; with every string inside when the
  endpoint is not an operation of the spec.

:func:`text_fields` walks a body once, in document order, and yields each such string as a
:class:`TextField` that can also be replaced (redaction). Paths in reports name positions,
never a caller's own object keys: ``messages[0].content``, ``metadata{2}`` (the value of the
third key), ``metadata{key 2}`` (that key itself).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from plugins.guard.classify import EMBEDDED
from plugins.guard.fields_table import FIELDS
from proxy.operations import OperationIndex

__all__ = ["GUARDED_OPERATIONS", "KeyField", "TextField", "ValueField", "path_steps", "text_fields",
           "texts"]

#: Operation names with at least one field a model reads.
GUARDED_OPERATIONS = frozenset(operation for operation, _, _ in FIELDS)


class TextField:
    """A string a model reads, somewhere in a request body; ``path`` names it in reports."""

    __slots__ = ("container", "key", "path")

    def __init__(self, container: Any, key: Any, path: str) -> None:
        self.container = container
        self.key = key
        self.path = path

    @property
    def value(self) -> str:
        """The current text."""
        raise NotImplementedError

    def replace(self, text: str) -> None:
        """Put ``text`` in place of the current value."""
        raise NotImplementedError


class ValueField(TextField):
    """A string value: ``container[key]`` of a JSON object or list."""

    __slots__ = ()

    @property
    def value(self) -> str:
        """The current text."""
        text: str = self.container[self.key]
        return text

    def replace(self, text: str) -> None:
        """Put ``text`` in place of the current value."""
        self.container[self.key] = text


class KeyField(TextField):
    """A key of a free-form JSON object (a property name of a tool's schema, ...).

    Replacing it renames the key in place, keeping the order of the object; a name already
    taken gets a numbered suffix. Rename keys after replacing values below them.
    """

    __slots__ = ()

    @property
    def value(self) -> str:
        """The current text."""
        text: str = self.key
        return text

    def replace(self, text: str) -> None:
        """Rename the key to ``text``."""
        new, number = text, 1
        while new in self.container and new != self.key:
            number += 1
            new = f"{text} ({number})"
        items = [(new if key == self.key else key, value)
                 for key, value in self.container.items()]
        self.container.clear()
        self.container.update(items)
        self.key = new


class _Node:
    __slots__ = ("children", "kind")

    def __init__(self) -> None:
        self.kind: str | None = None
        self.children: dict[str, _Node] = {}


@functools.cache
def _tries() -> dict[str, _Node]:
    roots: dict[str, _Node] = {}
    for operation, path, kind in FIELDS:
        node = roots.setdefault(operation, _Node())
        for step in path_steps(path):
            node = node.children.setdefault(step, _Node())
        node.kind = kind
    return roots


def path_steps(path: str) -> list[str]:
    """The steps of a field path from the generated tables: ``messages[].content`` ->
    ``["messages", "[]", "content"]`` (``{}`` stands for any key of an object)."""
    steps: list[str] = []
    for token in path.split("."):
        name = token.split("[", 1)[0].split("{", 1)[0]
        if name:
            steps.append(name)
        rest = token[len(name):]
        steps.extend(rest[i:i + 2] for i in range(0, len(rest), 2))
    return steps


def _root(operation_name: str) -> _Node | None:
    tries = _tries()
    return tries.get(operation_name) or tries.get(operation_name.removesuffix("_stream"))


def text_fields(operation_name: str, body: Any) -> Iterator[TextField]:
    """The strings of ``body`` a model reads, for the operation named ``operation_name``, in
    document order; nothing for operations without such strings."""
    root = _root(operation_name)
    if root is None or not isinstance(body, dict):
        return
    embedded = None
    if operation_name in EMBEDDED:
        embedded = _embedded_root(body.get(EMBEDDED[operation_name][1]))
    for position, key in enumerate(list(body)):
        yield from _walk(body, key, position, root, "", embedded)


def texts(operation_name: str, body: Any) -> Iterator[tuple[str, str]]:
    """``(path, text)`` for every string of ``body`` a model reads, in document order."""
    return ((field.path, field.value) for field in text_fields(operation_name, body))


def _embedded_root(endpoint: Any) -> _Node | None:
    """The rows for bodies sent to ``endpoint``: its operation's, or ``tree`` when unknown."""
    if isinstance(endpoint, str):
        operation, _ = OperationIndex.default().classify("POST", endpoint.split("?", 1)[0])
        if operation is not None:
            return _root(operation.name) or _Node()
    everything = _Node()
    everything.kind = "tree"
    return everything


def _walk(container: dict[str, Any], key: str, position: int, parent: _Node, path: str,
          embedded: _Node | None) -> Iterator[TextField]:
    """Follow ``parent``'s child for ``key``, the ``position``-th key of ``container``."""
    named = parent.children.get(key)
    if named is not None:
        yield from _visit(container, key, named, f"{path}.{key}" if path else key, embedded)
    mapped = parent.children.get("{}")
    if mapped is not None:
        yield from _visit(container, key, mapped, f"{path}{{{position}}}", embedded)


def _visit(container: Any, key: Any, node: _Node, path: str,
           embedded: _Node | None) -> Iterator[TextField]:
    value = container[key]
    if node.kind == "tree":
        yield from _tree(container, key, path)
        return
    if node.kind == "text" and isinstance(value, str):
        yield ValueField(container, key, path)
    elif node.kind == "embedded" and embedded is not None:
        if embedded.kind == "tree":
            yield from _tree(container, key, path)
        elif isinstance(value, dict):
            for position, inner in enumerate(list(value)):
                yield from _walk(value, inner, position, embedded, path, None)
        return
    if isinstance(value, dict):
        for position, inner in enumerate(list(value)):
            yield from _walk(value, inner, position, node, path, embedded)
    elif isinstance(value, list) and "[]" in node.children:
        item_node = node.children["[]"]
        for index in range(len(value)):
            yield from _visit(value, index, item_node, f"{path}[{index}]", embedded)


def _tree(container: Any, key: Any, path: str) -> Iterator[TextField]:
    """Every string inside ``container[key]``, object keys included."""
    value = container[key]
    if isinstance(value, str):
        yield ValueField(container, key, path)
    elif isinstance(value, dict):
        for position, inner in enumerate(list(value)):
            yield KeyField(value, inner, f"{path}{{key {position}}}")
            yield from _tree(value, inner, f"{path}{{{position}}}")
    elif isinstance(value, list):
        for index in range(len(value)):
            yield from _tree(value, index, f"{path}[{index}]")
