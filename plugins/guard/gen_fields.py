"""Generate ``plugins/guard/fields_table.py``: every request-body string a model reads.

Usage::

    python -m plugins.guard.gen_fields SPEC_PATH          # (re)write the table
    python -m plugins.guard.gen_fields SPEC_PATH --check  # exit 1 if the table is stale

Walks the JSON request schema of every operation in the spec. For the operations of
:data:`~plugins.guard.classify.PROMPT_OPERATIONS` it lists each free-text string (and each
free-form value, read whole) that :mod:`plugins.guard.classify` says is prompt text, with its
path (``messages[].content[].text``); a free-text string it has no decision for stops the
generator. An operation outside that list whose body has a field named like prompt text stops
it too, until it is classified. The runtime never reads the spec, only the generated table.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.guard import classify
from proxy.operations import OperationIndex
from proxy.tools.gen_operations import SpecError
from proxy.tools.spec_tables import render_table, table_main

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "fields_table.py"
_METHODS = ("get", "put", "post", "delete", "patch")
_NOT_FREE_TEXT_FORMATS = frozenset({
    "uuid", "uri", "url", "date-time", "date", "time", "binary", "byte", "password", "email"})

Row = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Leaf:
    """A place in a body that holds a free-text string (``string``) or any JSON (``free``)."""

    path: str
    names: tuple[str, ...]
    kind: str

    @property
    def name(self) -> str:
        """The property name nearest to the value."""
        return self.names[-1] if self.names else ""


class _Walker:
    """Collects the leaves of one spec's request bodies."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.schemas: Mapping[str, Any] = (spec.get("components") or {}).get("schemas") or {}
        #: Recursive components met, with where the walk stopped going round them.
        self.cut: dict[str, str] = {}

    def resolve(self, schema: Any) -> tuple[Any, str | None]:
        """``(schema, component name)`` after following one ``$ref``."""
        if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in self.schemas:
                raise SpecError(f"unresolvable $ref {schema['$ref']!r}")
            return self.schemas[name], name
        return schema, None

    def leaves(self, schema: Any, path: str, names: tuple[str, ...],
               seen: frozenset[str]) -> Iterator[Leaf]:
        """Every leaf under ``schema``."""
        schema, component = self.resolve(schema)
        if not isinstance(schema, dict):
            if schema is True:
                yield Leaf(path, names, "free")
            return
        if component is not None:
            if component in seen:
                self.cut.setdefault(component, path or "(top)")
                return
            seen = seen | {component}
        composed = [sub for key in ("anyOf", "oneOf", "allOf") for sub in schema.get(key) or ()]
        for sub in composed:
            yield from self.leaves(sub, path, names, seen)
        kind = schema.get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind} if kind else set()
        if "string" in kinds and _free_text(schema):
            yield Leaf(path, names, "string")
        if "items" in schema:
            yield from self.leaves(schema["items"], path + "[]", names, seen)
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and (extra.get("type") or extra.get("$ref")
                                        or any(k in extra for k in ("anyOf", "oneOf"))):
            yield from self.leaves(extra, path + "{}", names, seen)
        elif not properties and not composed and (
                extra is True or extra == {} or (not kinds and "items" not in schema
                                                 and "enum" not in schema
                                                 and "const" not in schema)
                or (kinds == {"object"} and extra is None)):
            yield Leaf(path, names, "free")
        for prop, sub in properties.items():
            child = f"{path}.{prop}" if path else str(prop)
            yield from self.leaves(sub, child, (*names, str(prop)), seen)


def _free_text(schema: Mapping[str, Any]) -> bool:
    return ("enum" not in schema and "const" not in schema
            and schema.get("format") not in _NOT_FREE_TEXT_FORMATS
            and "contentMediaType" not in schema and "contentEncoding" not in schema)


def _decide(leaf: Leaf) -> str | None:
    """``text``, ``tree``, ``None`` (not prompt text) or ``"?"`` (no decision)."""
    if any(name in classify.OPAQUE_SUBTREES for name in leaf.names):
        return None
    for ending, verdict in classify.PATHS.items():
        if leaf.path == ending or leaf.path.endswith("." + ending):
            return ("tree" if leaf.kind == "free" else "text") if verdict else None
    if leaf.name in classify.TREE:
        return "tree"
    if leaf.name in classify.TEXT:
        return "tree" if leaf.kind == "free" else "text"
    if leaf.name in classify.NOT_TEXT:
        return None
    return "?"


def _bodies(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """``(operationId, where, schema)`` for every JSON or multipart request body."""
    for path, item in (spec.get("paths") or {}).items():
        for method, operation in (item or {}).items():
            if method not in _METHODS or not isinstance(operation, dict):
                continue
            body = operation.get("requestBody")
            if not body:
                continue
            if isinstance(body.get("$ref"), str):
                body = ((spec.get("components") or {}).get("requestBodies") or {})[
                    body["$ref"].rsplit("/", 1)[-1]]
            for content_type, media in (body.get("content") or {}).items():
                lowered = content_type.lower()
                if "json" in lowered or lowered.startswith("multipart/"):
                    yield (str(operation.get("operationId", "")),
                           f"{method.upper()} {path} ({content_type})",
                           (media or {}).get("schema"))


def rows_for(spec: Mapping[str, Any], index: OperationIndex | None = None) -> list[Row]:
    """``(operation name, path, text|tree|embedded)`` for every field a model reads.

    Raises :class:`SpecError` for undecided fields and operations.
    """
    index = index or OperationIndex.default()
    names = {op.operation_id: op.name for op in index.all()}
    _check_lists(set(names.values()))
    walker = _Walker(spec)
    rows: dict[Row, None] = {}
    undecided: list[str] = []
    suspicious: dict[str, str] = {}
    recursive: list[str] = []
    for operation_id, where, schema in _bodies(spec):
        name = names.get(operation_id)
        if name is None:
            raise SpecError(f"{where}: operation {operation_id!r} is not in the operation "
                            "table (regenerate proxy/operations_table.py first)")
        walker.cut.clear()
        leaves = list(walker.leaves(schema, "", (), frozenset()))
        if name in classify.PROMPT_OPERATIONS:
            if walker.cut:
                recursive.extend(f"{where}: {component} at {path}"
                                 for component, path in sorted(walker.cut.items()))
            for leaf in leaves:
                decision = _decide(leaf)
                if decision == "?":
                    undecided.append(f"{name}: {leaf.path} ({leaf.name})")
                elif decision is not None:
                    rows[(name, leaf.path, decision)] = None
        elif name in classify.EMBEDDED:
            embedded_path = classify.EMBEDDED[name][0]
            if not any(leaf.path == embedded_path for leaf in leaves):
                raise SpecError(f"{where}: no free-form {embedded_path} any more")
            rows[(name, embedded_path, "embedded")] = None
        elif name not in classify.OTHER_OPERATIONS:
            hits = sorted({leaf.path for leaf in leaves if classify.SUSPECT.match(leaf.name)})
            if hits:
                suspicious[name] = ", ".join(hits)
    for name, extras in classify.UNDECLARED.items():
        for path, kind, _reason in extras:
            rows[(name, path, kind)] = None
    problems = []
    if undecided:
        problems.append(
            "fields of prompt operations without a decision; add each name to TEXT, TREE or "
            "NOT_TEXT (or its path to PATHS) in plugins/guard/classify.py:\n  "
            + "\n  ".join(sorted(set(undecided))))
    if suspicious:
        problems.append(
            "operations with fields named like prompt text; add each to PROMPT_OPERATIONS or "
            "OTHER_OPERATIONS in plugins/guard/classify.py:\n  "
            + "\n  ".join(f"{name}: {hits}" for name, hits in sorted(suspicious.items())))
    if recursive:
        problems.append("recursive schemas in prompt operations; paths cannot express "
                        "them:\n  " + "\n  ".join(recursive))
    if problems:
        raise SpecError("\n".join(problems))
    return sorted(rows)


def _check_lists(known: set[str]) -> None:
    listed = {*classify.PROMPT_OPERATIONS, *classify.EMBEDDED, *classify.OTHER_OPERATIONS,
              *classify.UNDECLARED}
    unknown = sorted(listed - known)
    if unknown:
        raise SpecError("plugins/guard/classify.py names operations the spec does not have: "
                        + ", ".join(unknown))
    both = sorted(classify.PROMPT_OPERATIONS & set(classify.OTHER_OPERATIONS))
    if both:
        raise SpecError("operations both read and not read by a model: " + ", ".join(both))
    overlap = sorted((set(classify.TEXT) | set(classify.TREE)) & set(classify.NOT_TEXT)
                     | set(classify.TEXT) & set(classify.TREE))
    if overlap:
        raise SpecError("property names classified twice: " + ", ".join(overlap))


_DOC = (
    'Where request bodies hold text a model reads.',
    '',
    'Rows: (operation name, field path, kind). ``text``: the string at the path;',
    '``tree``: every string inside the value at the path, object keys included;',
    "``embedded``: request bodies of the operation the body's endpoint names. Read it",
    'through :mod:`plugins.guard.fields`.',
)


def render(rows: list[Row], spec_name: str, spec_sha256: str) -> str:
    """The text of the generated table."""
    return render_table("plugins.guard.gen_fields", spec_name, spec_sha256, _DOC,
                        "FIELDS: tuple[tuple[str, str, str], ...] = (", rows)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    return table_main("plugins.guard.gen_fields", DEFAULT_OUTPUT,
                      lambda spec, name, sha: render(rows_for(spec), name, sha), argv)


if __name__ == "__main__":
    sys.exit(main())
