"""Classify a request (method + URL path) to the Mistral API operation it calls.

The operation table is generated from the OpenAPI spec by :mod:`proxy.tools.gen_operations`
and committed as :mod:`proxy.operations_table`; this module never reads the spec itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from proxy.operations_table import OPERATIONS

__all__ = ["Operation", "OperationIndex", "extract_resource_ids"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the Mistral API.

    ``path`` is the URL template (``/v1/conversations/{conversation_id}``). ``stream_variant``
    marks the spec's ``#stream`` twin of an operation, chosen by ``"stream": true`` in the JSON
    body. ``request_kind`` is ``json``, ``multipart``, ``none`` or ``other``; ``response_kind``
    is ``json``, ``sse``, ``binary`` or ``none``. Chat and FIM completions and speech declare
    both JSON and an event stream and are recorded as ``json``: they stream only when the body
    asks for it. ``reports_usage``: the answer says what the call used (``usage``): upstream
    bills it by the tokens, pages or seconds it processed.
    """

    operation_id: str
    name: str
    method: str
    path: str
    stream_variant: bool
    request_kind: str
    response_kind: str
    tags: tuple[str, ...]
    deprecated: bool
    reports_usage: bool = False


@dataclass(frozen=True, slots=True)
class _Leaf:
    """What a fully matched route resolves to."""

    plain: Operation
    stream: Operation
    param_names: tuple[str, ...]


@dataclass(slots=True)
class _Node:
    """A segment trie node: literal children are tried before the parameter child."""

    literals: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    leaf: _Leaf | None = None


def _segments(path: str) -> list[str]:
    """Split an absolute URL path (no trailing slash) into segments."""
    return path[1:].split("/")


def _is_param(segment: str) -> bool:
    """Whether a template segment is a ``{parameter}``."""
    return segment.startswith("{") and segment.endswith("}")


def _match(node: _Node, segments: list[str], index: int, captured: list[str]) -> _Leaf | None:
    """Depth-first walk preferring literals; backtracks into parameters when a literal dead-ends."""
    if index == len(segments):
        return node.leaf
    segment = segments[index]
    child = node.literals.get(segment)
    if child is not None:
        found = _match(child, segments, index + 1, captured)
        if found is not None:
            return found
    if node.param is not None and segment:
        captured.append(segment)
        found = _match(node.param, segments, index + 1, captured)
        if found is not None:
            return found
        captured.pop()
    return None


class OperationIndex:
    """Fast lookup from (method, path) to :class:`Operation`.

    Templates without parameters are answered from one dict; the rest from a segment trie per
    (method, segment count), where a literal segment always beats a parameter at the same depth.
    """

    __slots__ = ("_by_name", "_operations", "_static", "_tries")

    def __init__(self, operations: Iterable[Operation]) -> None:
        """Index *operations*; a ``#stream`` variant attaches to its plain twin."""
        self._operations = tuple(operations)
        self._by_name = {op.name: op for op in self._operations}
        if len(self._by_name) != len(self._operations):
            raise ValueError("operation names must be unique")

        pairs: dict[tuple[str, str], list[Operation | None]] = {}
        for op in self._operations:
            if not op.path.startswith("/"):
                raise ValueError(f"path template must start with '/': {op.path!r}")
            pair = pairs.setdefault((op.method, op.path), [None, None])
            slot = 1 if op.stream_variant else 0
            if pair[slot] is not None:
                raise ValueError(f"duplicate route {op.method} {op.path}")
            pair[slot] = op

        self._static: dict[tuple[str, str], _Leaf] = {}
        self._tries: dict[tuple[str, int], _Node] = {}
        shapes: dict[tuple[str, tuple[str, ...]], str] = {}
        for (method, path), (plain, stream) in pairs.items():
            segments = _segments(path)
            names = tuple(s[1:-1] for s in segments if _is_param(s))
            # A path with only a #stream entry still answers non-streaming requests, and vice versa.
            either = plain or stream
            if either is None:  # unreachable: every pair holds at least one operation
                continue
            leaf = _Leaf(either, stream or either, names)
            shape = tuple("{}" if _is_param(s) else s for s in segments)
            if (method, shape) in shapes:
                raise ValueError(f"{method} {path} clashes with {shapes[(method, shape)]}")
            shapes[(method, shape)] = path
            if not names:
                self._static[(method, path)] = leaf
                continue
            node = self._tries.setdefault((method, len(segments)), _Node())
            for segment in segments:
                if _is_param(segment):
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    node = node.literals.setdefault(segment, _Node())
            node.leaf = leaf

    @classmethod
    def default(cls) -> OperationIndex:
        """The index of the committed operation table, built once per process."""
        return _default_index()

    def classify(
        self, method: str, path: str, stream: bool = False
    ) -> tuple[Operation | None, dict[str, str]]:
        """Return the operation for *method* and *path* (no query string) and its path params.

        With ``stream=True`` the ``#stream`` variant is returned where the spec has one.
        Unknown routes give ``(None, {})``. One trailing slash is tolerated. Parameter values
        are returned exactly as they appear in *path* (no percent-decoding).
        """
        if not path.startswith("/"):
            return None, {}
        method = method.upper()
        trimmed = path[:-1] if path.endswith("/") and len(path) > 1 else path
        leaf = self._static.get((method, trimmed))
        if leaf is not None:
            return (leaf.stream if stream else leaf.plain), {}
        segments = _segments(trimmed)
        root = self._tries.get((method, len(segments)))
        if root is None:
            return None, {}
        captured: list[str] = []
        leaf = _match(root, segments, 0, captured)
        if leaf is None:
            return None, {}
        op = leaf.stream if stream else leaf.plain
        return op, dict(zip(leaf.param_names, captured, strict=True))

    def all(self) -> tuple[Operation, ...]:
        """Every operation, in table order (by path, then method, plain before stream)."""
        return self._operations

    def by_name(self, name: str) -> Operation:
        """The operation called *name* (``conversations.start``); ``KeyError`` if unknown."""
        return self._by_name[name]


@functools.cache
def _default_index() -> OperationIndex:
    # Immutable and derived from a constant table, so one per process is safe to share.
    return OperationIndex(Operation(*row) for row in OPERATIONS)


# Path parameters that identify a resource without ending in "_id".
_EXTRA_ID_PARAMS = frozenset({"id"})
_ID_SUFFIXES = ("_id", "_uuid", "_id_or_name")
# JSON body fields a policy may key on (conversation start, agents completion, restart).
_BODY_ID_FIELDS = ("agent_id", "model", "from_entry_id")


def extract_resource_ids(
    op: Operation | None, path_params: Mapping[str, str], body: object
) -> dict[str, str]:
    """Collect the resource ids of a request that a policy may care about.

    From the path: parameters ending in ``_id`` (also ``_uuid`` and ``_id_or_name``). From a
    JSON object body: ``agent_id``, ``model`` and ``from_entry_id``. Only non-empty strings
    are kept; path parameters win over body fields; odd bodies are ignored, never raised on.
    *op* is what :meth:`OperationIndex.classify` returned; the fields are the same for every
    operation today, so it is accepted for callers' convenience and future per-operation rules.
    """
    ids: dict[str, str] = {}
    if isinstance(body, dict):
        for key in _BODY_ID_FIELDS:
            value = body.get(key)
            if isinstance(value, str) and value:
                ids[key] = value
    for name, value in path_params.items():
        is_id = name.endswith(_ID_SUFFIXES) or name in _EXTRA_ID_PARAMS
        if is_id and isinstance(value, str) and value:
            ids[name] = value
    return ids
