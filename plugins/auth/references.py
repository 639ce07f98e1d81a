"""Resource ids named inside request bodies: an agent a conversation would use, the agents an
agent hands off to, the files a batch job reads or a message attaches, ...

Each is checked like an id in the path: a body naming a resource the caller may not see gets
the same 404. Where a body may name one is derived from the OpenAPI spec by
:mod:`plugins.auth.gen_references` into :mod:`plugins.auth.references_table` (operation, JSON
path, kind), using :data:`FIELD_KINDS` to tell which fields name which kind; the generator
refuses a spec whose bodies have a field that looks like such a reference and is in neither
:data:`FIELD_KINDS` nor :data:`NOT_REFERENCES`.

The inline requests of a batch job (``requests[].body``) are free-form in the spec: each is
the body of the job's ``endpoint`` and is read with that operation's paths (every known path
when the endpoint is not an operation of the spec).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any

from plugins.auth.ownership import AGENT, CONVERSATION, FILE
from plugins.auth.references_table import REFERENCES
from proxy.errors import SidecarError
from proxy.operations import OperationIndex

#: Body field name -> the kind of resource it names (a string id, or a list of them).
FIELD_KINDS: dict[str, str] = {
    "agent_id": AGENT,
    "next_agent_id": AGENT,
    "previous_agent_id": AGENT,
    "handoffs": AGENT,
    "agent_ids": AGENT,
    "file_id": FILE,
    "file_ids": FILE,
    "input_files": FILE,
    "training_files": FILE,
    "validation_files": FILE,
    "conversation_id": CONVERSATION,
    "conversation_ids": CONVERSATION,
}

#: Field names that look like references to a tracked kind and are not (with the reason).
NOT_REFERENCES: dict[str, str] = {
    "file": "the uploaded bytes themselves (multipart), not an id",
}

#: Looks like it names an agent, conversation, file or batch job (checked by the generator).
SUSPECT_NAME = re.compile(
    r"(?:^|_)(?:agents?|files?|conversations?|batch(?:es)?|jobs?|handoffs?)"
    r"(?:_(?:ids?|uuids?))?$")

#: Operations whose free-form inline requests are bodies of another operation:
#: name -> (path to the embedded bodies, field naming their endpoint).
EMBEDDED: dict[str, tuple[str, str]] = {
    "batch.jobs.create": ("requests[].body", "endpoint"),
}

#: Most distinct references one request may name (each is looked up).
MAX_REFERENCES = 1000

Step = str  # a key, "[]" (every list item) or "{}" (every map value)


@dataclass(frozen=True, slots=True)
class Reference:
    """Where a body may name a resource: the steps to the field, and its kind."""

    steps: tuple[Step, ...]
    kind: str


def parse_path(path: str) -> tuple[Step, ...]:
    """``messages[].content[].file_id`` -> ``("messages", "[]", "content", "[]", "file_id")``."""
    steps: list[Step] = []
    for token in path.split("."):
        name = token.rstrip("[]{}")
        if name:
            steps.append(name)
        rest = token[len(name):]
        steps.extend(rest[i:i + 2] for i in range(0, len(rest), 2))
    return tuple(steps)


@functools.cache
def _tables() -> tuple[dict[str, tuple[Reference, ...]], dict[str, tuple[Reference, ...]],
                       tuple[Reference, ...]]:
    json_refs: dict[str, list[Reference]] = {}
    form_refs: dict[str, list[Reference]] = {}
    for operation, content, path, kind in REFERENCES:
        target = json_refs if content == "json" else form_refs
        target.setdefault(operation, []).append(Reference(parse_path(path), kind))
    every = tuple(dict.fromkeys(r for refs in json_refs.values() for r in refs))
    return ({k: tuple(v) for k, v in json_refs.items()},
            {k: tuple(v) for k, v in form_refs.items()}, every)


def json_references(operation: str) -> tuple[Reference, ...]:
    """Where a JSON body of ``operation`` (an operation name) may name resources."""
    return _tables()[0].get(operation, ())


def form_references(operation: str) -> tuple[Reference, ...]:
    """Where a multipart form of ``operation`` may name resources (top-level fields)."""
    return _tables()[1].get(operation, ())


def _values(node: Any, steps: tuple[Step, ...]) -> Iterator[Any]:
    """Every value found by following ``steps`` from ``node`` (mismatched shapes yield
    nothing: a string where the spec also allows a list, and so on)."""
    stack: list[tuple[Any, int]] = [(node, 0)]
    while stack:
        value, index = stack.pop()
        if index == len(steps):
            yield value
            continue
        step = steps[index]
        if step == "[]":
            if isinstance(value, list):
                stack.extend((item, index + 1) for item in reversed(value))
        elif step == "{}":
            if isinstance(value, dict):
                stack.extend((item, index + 1) for item in value.values())
        elif isinstance(value, dict) and step in value:
            stack.append((value[step], index + 1))


def _ids(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, str) and item)


def _embedded_references(endpoint: Any) -> tuple[Reference, ...]:
    if isinstance(endpoint, str):
        op, _ = OperationIndex.default().classify("POST", endpoint.split("?", 1)[0])
        if op is not None:
            return json_references(op.name)
    return _tables()[2]


def body_references(operation: str, body: Any) -> list[tuple[str, str]]:
    """Every ``(kind, id)`` a JSON body of ``operation`` names, each once, in order.

    Raises :class:`~proxy.errors.SidecarError` (400) past :data:`MAX_REFERENCES`.
    """
    found: dict[tuple[str, str], None] = {}

    def collect(refs: Iterable[Reference], node: Any) -> None:
        for ref in refs:
            for value in _values(node, ref.steps):
                for resource_id in _ids(value):
                    found[(ref.kind, resource_id)] = None
        if len(found) > MAX_REFERENCES:
            raise SidecarError(400, f"The request names more than {MAX_REFERENCES} "
                               "resources.", code="too_many_references")

    collect(json_references(operation), body)
    embedded = EMBEDDED.get(operation)
    if embedded is not None and isinstance(body, dict):
        path, endpoint_field = embedded
        refs = _embedded_references(body.get(endpoint_field))
        for inner in _values(body, parse_path(path)):
            collect(refs, inner)
    return list(found)


@functools.cache
def needles(operation: str) -> tuple[bytes, ...]:
    """Byte strings one of which a raw JSON body must contain to name a resource (a body
    may also spell a key with ``\\u`` escapes, which callers check for separately)."""
    refs = list(json_references(operation))
    if operation in EMBEDDED:
        refs.extend(_tables()[2])
    return tuple(dict.fromkeys(f'"{r.steps[-1]}"'.encode() for r in refs))


def may_reference(operation: str, raw: bytes | None) -> bool:
    """Cheap pre-check on the raw body: whether :func:`body_references` can find anything."""
    keys = needles(operation)
    if not keys or not raw:
        return False
    return b"\\u" in raw or any(key in raw for key in keys)


# --- multipart forms ---------------------------------------------------------------------------


def _boundary(content_type: str) -> str | None:
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        return None
    boundary = message.get_param("boundary")
    return boundary if isinstance(boundary, str) and boundary else None


def form_fields(content_type: str, body: bytes, names: Iterable[str]) -> list[tuple[str, str]]:
    """The values of the form fields called one of ``names`` in a multipart body.

    Refuses (400) a body this parser cannot read with certainty, rather than let a field it
    missed reach upstream.
    """
    wanted = set(names)
    boundary = _boundary(content_type)
    if boundary is None:
        raise SidecarError(400, "Expected a multipart/form-data body with a boundary.")
    delimiter = b"--" + boundary.encode("latin-1")
    parts = body.split(delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise SidecarError(400, "Malformed multipart body.")
    found: list[tuple[str, str]] = []
    for part in parts[1:-1]:
        if not part.startswith(b"\r\n"):
            raise SidecarError(400, "Malformed multipart body.")
        head, separator, content = part[2:].partition(b"\r\n\r\n")
        if not separator:
            raise SidecarError(400, "Malformed multipart body.")
        disposition = Message()
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon:
                raise SidecarError(400, "Malformed multipart body.")
            disposition[name.strip()] = value.strip()
        field: Any = disposition.get_param("name", header="content-disposition")
        if isinstance(field, tuple):
            field = collapse_rfc2231_value(field)
        if not isinstance(field, str):
            continue
        if field in wanted:
            found.append((field, content.removesuffix(b"\r\n").decode("utf-8", "replace")))
    return found


__all__ = ["EMBEDDED", "FIELD_KINDS", "MAX_REFERENCES", "NOT_REFERENCES", "SUSPECT_NAME",
           "Reference", "body_references", "form_fields", "form_references",
           "json_references", "may_reference", "parse_path"]
