"""Generate ``plugins/auth/references_table.py``: where request bodies name tracked resources.

Usage::

    python -m plugins.auth.gen_references SPEC_PATH          # (re)write the table
    python -m plugins.auth.gen_references SPEC_PATH --check  # exit 1 if the table is stale

Walks every operation's request body schema (JSON and multipart) and lists each field that
:data:`plugins.auth.references.FIELD_KINDS` says names an agent, conversation, file or batch
job, with its path (``messages[].content[].file_id``). A field whose name looks like such a
reference (:data:`~plugins.auth.references.SUSPECT_NAME`) and that is classified neither way
stops the generator: someone must decide what it names before the table can be written. The
runtime never reads the spec, only the generated table.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from plugins.auth.references import FIELD_KINDS, NOT_REFERENCES, SUSPECT_NAME
from proxy.operations import OperationIndex
from proxy.tools.gen_operations import SpecError
from proxy.tools.spec_tables import render_table, table_main

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "references_table.py"
_METHODS = ("get", "put", "post", "delete", "patch")

Row = tuple[str, str, str, str]


class _Walker:
    """Collects reference fields of one spec's request bodies."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self.schemas: Mapping[str, Any] = (spec.get("components") or {}).get("schemas") or {}
        self.unclassified: list[str] = []
        #: Recursive component -> where the walk stopped going round it.
        self.cut: dict[str, str] = {}
        self._holds: dict[str, bool] = {}

    def resolve(self, schema: Any) -> tuple[Any, str | None]:
        """``(schema, component name)`` after following one ``$ref``."""
        if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in self.schemas:
                raise SpecError(f"unresolvable $ref {schema['$ref']!r}")
            return self.schemas[name], name
        return schema, None

    def carries_string(self, schema: Any, seen: frozenset[str] = frozenset()) -> bool:
        """Whether a value of ``schema`` may be a string or a list of strings (not bytes)."""
        schema, name = self.resolve(schema)
        if name in seen or not isinstance(schema, dict):
            return False
        seen = seen | {name} if name else seen
        if any(self.carries_string(s, seen) for k in ("anyOf", "oneOf", "allOf")
               for s in schema.get(k) or ()):
            return True
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "string" in kinds:
            return schema.get("format") != "binary" and "contentMediaType" not in schema
        if "array" in kinds:
            return self.carries_string(schema.get("items"), seen)
        return False

    def fields(self, schema: Any, path: str, seen: frozenset[str], where: str
               ) -> Iterator[tuple[str, str]]:
        """``(path, kind)`` of every reference field under ``schema``."""
        schema, name = self.resolve(schema)
        if not isinstance(schema, dict):
            return
        if name is not None:
            if name in seen:
                self.cut.setdefault(name, f"{where} at {path or '(top)'}")
                return
            seen = seen | {name}
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key) or ():
                yield from self.fields(sub, path, seen, where)
        if "items" in schema:
            yield from self.fields(schema["items"], path + "[]", seen, where)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield from self.fields(extra, path + "{}", seen, where)
        for prop, sub in (schema.get("properties") or {}).items():
            child = f"{path}.{prop}" if path else str(prop)
            if prop in FIELD_KINDS and self.carries_string(sub):
                yield child, FIELD_KINDS[prop]
            elif (SUSPECT_NAME.search(str(prop)) and prop not in NOT_REFERENCES
                  and prop not in FIELD_KINDS and self.carries_string(sub)):
                self.unclassified.append(f"{where}: {child}")
            yield from self.fields(sub, child, seen, where)

    def holds_references(self, schema: Any, seen: frozenset[str] = frozenset()) -> bool:
        """Whether a reference field may appear anywhere below ``schema``."""
        schema, name = self.resolve(schema)
        if not isinstance(schema, dict) or name in seen:
            return False
        if name is not None and name in self._holds:
            return self._holds[name]
        inner = seen | {name} if name else seen
        subs = [*(s for k in ("anyOf", "oneOf", "allOf") for s in schema.get(k) or ()),
                schema.get("items"), schema.get("additionalProperties"),
                *(schema.get("properties") or {}).values()]
        holds = any(prop in FIELD_KINDS for prop in schema.get("properties") or {}) or any(
            self.holds_references(s, inner) for s in subs if isinstance(s, dict))
        if name is not None and not seen:
            self._holds[name] = holds
        return holds

    def check_recursion(self) -> None:
        """Refuse recursive schemas that hold references: paths cannot express them."""
        for name, where in sorted(self.cut.items()):
            if self.holds_references(self.schemas[name]):
                raise SpecError(f"{where}: recursive schema {name} holds references; the "
                                "table cannot express them")


def rows_for(spec: Mapping[str, Any], index: OperationIndex | None = None) -> list[Row]:
    """``(operation name, json|multipart, path, kind)`` for every reference field.

    Raises :class:`SpecError` for fields that look like references and are unclassified.
    """
    index = index or OperationIndex.default()
    names = {op.operation_id: op.name for op in index.all()}
    walker = _Walker(spec)
    rows: dict[Row, None] = {}
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
            op_name = names.get(operation.get("operationId", ""))
            if op_name is None:
                raise SpecError(f"{method.upper()} {path}: operation "
                                f"{operation.get('operationId')!r} is not in the operation "
                                "table (regenerate proxy/operations_table.py first)")
            for content_type, media in (body.get("content") or {}).items():
                content = ("multipart" if content_type.lower().startswith("multipart/")
                           else "json" if "json" in content_type.lower() else None)
                if content is None:
                    continue
                where = f"{method.upper()} {path} ({content_type})"
                for field, kind in walker.fields((media or {}).get("schema"), "",
                                                 frozenset(), where):
                    if content == "multipart" and ("." in field or "[" in field):
                        raise SpecError(f"{where}: nested multipart field {field}")
                    rows[(op_name, content, field, kind)] = None
    walker.check_recursion()
    if walker.unclassified:
        raise SpecError(
            "request body fields that look like references to tracked resources are not "
            "classified; add each to FIELD_KINDS or NOT_REFERENCES in "
            "plugins/auth/references.py:\n  " + "\n  ".join(sorted(set(walker.unclassified))))
    return sorted(rows)


_DOC = (
    'Where request bodies name agents, conversations, files and batch jobs.',
    '',
    'Rows: (operation name, json|multipart, field path, kind). Read it through',
    ':mod:`plugins.auth.references`.',
)


def render(rows: list[Row], spec_name: str, spec_sha256: str) -> str:
    """The text of the generated table."""
    return render_table("plugins.auth.gen_references", spec_name, spec_sha256, _DOC,
                        "REFERENCES: tuple[tuple[str, str, str, str], ...] = (", rows)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    return table_main("plugins.auth.gen_references", DEFAULT_OUTPUT,
                      lambda spec, name, sha: render(rows_for(spec), name, sha), argv)


if __name__ == "__main__":
    sys.exit(main())
