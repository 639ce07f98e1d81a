"""Generate ``proxy/operations_table.py`` from the Mistral OpenAPI spec.

Usage::

    python -m proxy.tools.gen_operations SPEC_PATH          # (re)write the table
    python -m proxy.tools.gen_operations SPEC_PATH --check  # exit 1 if the table is stale

The runtime (:mod:`proxy.operations`) imports only the generated table, so the proxy never needs
PyYAML or the spec itself.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "operations_table.py"

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")

# Tags that do not map one-to-one onto an SDK namespace.
NAMESPACE_OVERRIDES: dict[str, str] = {
    "batch": "batch.jobs",
    "observability.chat_completion_events.fields": "observability.chat_completion_fields",
}

# operationId prefixes that name a backend router rather than the action. Only the first match
# is stripped, so a prefix must come before any shorter prefix of it.
OPERATION_ID_PREFIXES: tuple[str, ...] = (
    "agents_api_v1_",
    "files_api_routes_",
    "jobs_api_routes_",
    "libraries_share_",
    "connector_",
    "users_api_admin_rate_limits_",
    "users_api_admin_spend_limits_",
    "users_api_admin_usage_",
    "users_api_admin_scim_sync_",
    "users_api_admin_",
    "users_admin_",
    "users_api_",
)

# Verbs the SDK spells differently from the operationId.
VERB_SYNONYMS: dict[str, str] = {
    "retrieve": "get",
    "fetch": "get",
}

# The ugly ones: operationId -> full name. Everything else is derived.
NAME_OVERRIDES: dict[str, str] = {
    # Single-endpoint APIs whose operationId is just the resource name.
    "chat_completion_v1_chat_completions_post": "chat.complete",
    "fim_completion_v1_fim_completions_post": "fim.complete",
    "agents_completion_v1_agents_completions_post": "agents.complete",
    "embeddings_v1_embeddings_post": "embeddings.create",
    "ocr_v1_ocr_post": "ocr.process",
    "moderations_v1_moderations_post": "classifiers.moderate",
    "chat_moderations_v1_chat_moderations_post": "classifiers.moderate_chat",
    "classifications_v1_classifications_post": "classifiers.classify",
    "chat_classifications_v1_chat_classifications_post": "classifiers.classify_chat",
    "speech_v1_audio_speech_post": "audio.speech.complete",
    "audio_api_v1_transcriptions_post": "audio.transcriptions.complete",
    "audio_api_v1_transcriptions_post_stream": "audio.transcriptions.complete_stream",
    # Fine-tuned models live under the "models" tag, as in the SDK.
    "jobs_api_routes_fine_tuning_update_fine_tuned_model": "models.update",
    "jobs_api_routes_fine_tuning_archive_fine_tuned_model": "models.archive",
    "jobs_api_routes_fine_tuning_unarchive_fine_tuned_model": "models.unarchive",
    # PATCH is the SDK's "update"; the deprecated PUT replaces the whole resource.
    "libraries_patch_v1": "libraries.update",
    "libraries_update_v1": "libraries.replace",
    "libraries_documents_patch_v1": "libraries.documents.update",
    "libraries_documents_update_v1": "libraries.documents.replace",
    "libraries_share_create_v1": "libraries.accesses.update_or_create",
    # Searches and bulk actions whose operationId reads as a plain get/delete.
    "get_chat_completion_events_v1_observability_chat_completion_events_search_post": (
        "observability.chat_completion_events.search"
    ),
    "get_chat_completion_event_ids_v1_observability_chat_completion_events_search_ids_post": (
        "observability.chat_completion_events.search_ids"
    ),
    "delete_dataset_records_v1_observability_dataset_records_bulk_delete_post": (
        "observability.datasets.records.bulk_delete"
    ),
    "get_dataset_records_v1_observability_datasets__dataset_id__records_get": (
        "observability.datasets.list_records"
    ),
    "get_dataset_import_tasks_v1_observability_datasets__dataset_id__tasks_get": (
        "observability.datasets.list_tasks"
    ),
    "get_dataset_import_task_v1_observability_datasets__dataset_id__tasks__task_id__get": (
        "observability.datasets.get_task"
    ),
    "post_dataset_records_from_campaign_v1_observability_datasets__dataset_id__imports_from_campaign_post": (  # noqa: E501
        "observability.datasets.import_from_campaign"
    ),
    "post_dataset_records_from_explorer_v1_observability_datasets__dataset_id__imports_from_explorer_post": (  # noqa: E501
        "observability.datasets.import_from_explorer"
    ),
    "post_dataset_records_from_file_v1_observability_datasets__dataset_id__imports_from_file_post": (  # noqa: E501
        "observability.datasets.import_from_file"
    ),
    "post_dataset_records_from_playground_v1_observability_datasets__dataset_id__imports_from_playground_post": (  # noqa: E501
        "observability.datasets.import_from_playground"
    ),
    "post_dataset_records_from_dataset_v1_observability_datasets__dataset_id__imports_from_dataset_post": (  # noqa: E501
        "observability.datasets.import_from_dataset"
    ),
    # Collections read with "get_*" in the operationId.
    "users_api_admin_roles_get_roles": "admin.users.list_roles",
    "users_api_admin_users_get_invite": "admin.users.list_invites",
    "users_api_admin_user_groups_get_user_group_members": "admin.user_groups.list_members",
    "get_workflow_registrations_v1_workflows_registrations_get": "workflows.list_registrations",
    "get_workflow_metrics_v1_workflows__workflow_name__metrics_get": "workflows.metrics.get",
    "get_stream_events_v1_workflows_events_stream_get": "workflows.events.stream",
}


class OperationRecord(NamedTuple):
    """One row of the generated table (field order is the table's column order)."""

    operation_id: str
    name: str
    method: str
    path: str
    stream_variant: bool
    request_kind: str
    response_kind: str
    tags: tuple[str, ...]
    deprecated: bool
    reports_usage: bool


class SpecError(Exception):
    """The spec cannot be turned into a consistent operation table."""


def load_spec(spec_path: Path) -> tuple[dict[str, Any], str]:
    """Parse the YAML spec at *spec_path*; return it with the sha256 of its bytes."""
    raw = spec_path.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(raw, Loader=loader)
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise SpecError(f"{spec_path}: not an OpenAPI document with 'paths'")
    return spec, hashlib.sha256(raw).hexdigest()


def request_kind(operation: Mapping[str, Any]) -> str:
    """Classify the request body by its declared content types."""
    body = operation.get("requestBody")
    if not body:
        return "none"
    content_types = [ct.lower() for ct in (body.get("content") or {})]
    if not content_types:
        return "none"
    if any(ct == "application/json" or ct.endswith("+json") for ct in content_types):
        return "json"
    if any(ct.startswith("multipart/") for ct in content_types):
        return "multipart"
    return "other"


def response_kind(operation: Mapping[str, Any]) -> str:
    """Classify the success response (200, else 201, else the first other 2xx).

    A response that declares both JSON and an event stream (chat, FIM, speech) is ``json``:
    those endpoints only stream when the request body says ``"stream": true``.
    """
    responses = operation.get("responses") or {}
    codes = sorted(str(code) for code in responses if str(code).startswith("2"))
    if not codes:
        return "none"
    code = "200" if "200" in codes else "201" if "201" in codes else codes[0]
    content_types = [ct.lower() for ct in ((responses[code] or {}).get("content") or {})]
    if not content_types:
        return "none"
    if any(ct == "application/json" or ct.endswith("+json") for ct in content_types):
        return "json"
    if any(ct == "text/event-stream" for ct in content_types):
        return "sse"
    return "binary"


def reports_usage(operation: Mapping[str, Any], schemas: Mapping[str, Any]) -> bool:
    """Whether the success answer's JSON carries what the call used (``usage``, or
    ``usage_info`` for OCR): the operations upstream bills by what they process."""
    responses = operation.get("responses") or {}
    answer = responses.get("200") or responses.get("201") or {}
    return any(_has_usage(content.get("schema"), schemas)
               for content in (answer.get("content") or {}).values())


def _has_usage(schema: Any, schemas: Mapping[str, Any], depth: int = 0) -> bool:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = schemas.get(str(schema["$ref"]).rsplit("/", 1)[-1])
    # Usage sits on the answer object or one level of composition below it.
    if not isinstance(schema, dict) or depth > 3:
        return False
    properties = schema.get("properties") or {}
    if "usage" in properties or "usage_info" in properties:
        return True
    return any(_has_usage(part, schemas, depth + 1)
               for key in ("allOf", "anyOf", "oneOf") for part in schema.get(key) or ())


def namespace_for(tags: Sequence[str]) -> str:
    """Turn the most specific tag (``beta.libraries.documents``) into a namespace."""
    if not tags:
        raise SpecError("operation without tags")
    tag = max(tags, key=lambda t: t.count("."))
    tag = tag.removeprefix("beta.").replace("-", "_").lower()
    return NAMESPACE_OVERRIDES.get(tag, tag)


def _strip_path_suffix(operation_id: str, path: str, method: str) -> str:
    """Drop the FastAPI-style ``_v1_models__model_id__get`` tail from an operationId."""
    munged = re.sub(r"[^0-9A-Za-z]", "_", path)
    for suffix in (f"{munged}_{method}", munged):
        if operation_id.endswith(suffix) and len(operation_id) > len(suffix):
            return operation_id[: -len(suffix)]
    return operation_id


def _remove_phrase(tokens: list[str], phrase: list[str]) -> list[str]:
    """Remove every occurrence of *phrase* from *tokens*, never touching the leading verb."""
    out = tokens[:1]
    i = 1
    while i < len(tokens):
        if tokens[i : i + len(phrase)] == phrase:
            i += len(phrase)
        else:
            out.append(tokens[i])
            i += 1
    return out


def verb_for(operation_id: str, path: str, method: str, namespace: str) -> str:
    """Derive the method part of a name (``list``, ``get_version``) from the operationId."""
    verb = _strip_path_suffix(operation_id, path, method)
    for prefix in OPERATION_ID_PREFIXES:
        if verb.startswith(prefix):
            verb = verb[len(prefix) :]
            break
    verb = verb.removesuffix("_v1")
    tokens = [t for t in verb.lower().split("_") if t]
    if not tokens:
        raise SpecError(f"cannot derive a name from operationId {operation_id!r}; add an override")
    # The namespace already says what the resource is: "list_models" in "models" is "list",
    # and "prompts_list" in "prompts" is "list" (a leading singular is a verb: "judge_...").
    for part in namespace.split("."):
        words = part.split("_")
        if tokens[: len(words)] == words and len(tokens) > len(words):
            tokens = tokens[len(words) :]
        singular = [*words[:-1], words[-1].removesuffix("s")]
        for phrase in (words, singular):
            tokens = _remove_phrase(tokens, phrase)
    if tokens[-2:] == ["by", "id"]:
        tokens = tokens[:-2]
    tokens[0] = VERB_SYNONYMS.get(tokens[0], tokens[0])
    last_literal = not path.rstrip("/").rsplit("/", 1)[-1].startswith("{")
    if tokens == ["get"] and method == "get" and last_literal:
        tokens = ["list"]
    return "_".join(tokens)


def name_for(operation_id: str, path: str, method: str, tags: Sequence[str]) -> str:
    """Stable dotted name for one operation, honouring :data:`NAME_OVERRIDES`."""
    if operation_id in NAME_OVERRIDES:
        return NAME_OVERRIDES[operation_id]
    namespace = namespace_for(tags)
    return f"{namespace}.{verb_for(operation_id, path, method, namespace)}"


def collect_operations(spec: Mapping[str, Any]) -> list[OperationRecord]:
    """Build the sorted, validated list of operations from a parsed spec."""
    records: list[OperationRecord] = []
    schemas = (spec.get("components") or {}).get("schemas") or {}
    for spec_key, item in spec["paths"].items():
        # "#stream" keys are body-selected stream twins; other fragments ("#id", "#idOrName")
        # only keep keys apart in the spec and are dropped from the HTTP path.
        path, _, fragment = str(spec_key).partition("#")
        for method, operation in (item or {}).items():
            if method not in HTTP_METHODS:
                continue
            operation_id = operation.get("operationId")
            if not operation_id:
                raise SpecError(f"{method.upper()} {spec_key}: missing operationId")
            tags = tuple(str(t) for t in operation.get("tags") or ())
            records.append(
                OperationRecord(
                    operation_id=str(operation_id),
                    name=name_for(str(operation_id), path, method, tags),
                    method=method.upper(),
                    path=path,
                    stream_variant=fragment == "stream",
                    request_kind=request_kind(operation),
                    response_kind=response_kind(operation),
                    tags=tags,
                    deprecated=bool(operation.get("deprecated", False)),
                    reports_usage=reports_usage(operation, schemas),
                )
            )
    # A stream twin's events carry the usage its JSON twin's answer declares.
    billed = {(r.method, r.path) for r in records if r.reports_usage}
    records = [r._replace(reports_usage=True)
               if r.stream_variant and (r.method, r.path) in billed else r for r in records]
    records.sort(key=lambda r: (r.path, r.method, r.stream_variant))
    validate(records)
    return records


def _route_key(record: OperationRecord) -> tuple[str, str, bool]:
    """Method, path shape with parameter names erased, and stream flag."""
    shape = re.sub(r"\{[^}/]+\}", "{}", record.path)
    return record.method, shape, record.stream_variant


def validate(records: Iterable[OperationRecord]) -> None:
    """Fail loudly on duplicate names, ids or routes, and on malformed names."""
    seen: dict[str, dict[object, str]] = {"name": {}, "operationId": {}, "route": {}}
    problems: list[str] = []
    for record in records:
        label = f"{record.method} {record.path}"
        if not NAME_RE.match(record.name):
            problems.append(f"bad name {record.name!r} for {label}")
        if record.stream_variant and not record.name.endswith("_stream"):
            problems.append(f"stream variant {record.name!r} for {label} must end in _stream")
        for kind, key in (
            ("name", record.name),
            ("operationId", record.operation_id),
            ("route", _route_key(record)),
        ):
            if key in seen[kind]:
                problems.append(f"duplicate {kind} {key!r}: {seen[kind][key]} and {label}")
            seen[kind][key] = label
    if problems:
        raise SpecError("; ".join(problems))


def _literal(value: object) -> str:
    """Python source for a table cell, double-quoted like the rest of the code base."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TypeError(f"unexpected table cell {value!r}")


def render(records: Sequence[OperationRecord], spec_name: str, spec_sha256: str) -> str:
    """Render the table module source; the same input always gives the same bytes."""
    lines = [
        "# Generated by `python -m proxy.tools.gen_operations`; do not edit by hand.",
        f"# Source: {spec_name} sha256={spec_sha256}",
        "# ruff: noqa: E501",
        '"""Operations of the Mistral API, one row per (method, path, stream variant).',
        "",
        "Columns: operation_id, name, method, path, stream_variant, request_kind, response_kind,",
        "tags, deprecated, reports_usage. Read it through :mod:`proxy.operations`.",
        '"""',
        "",
        f"SPEC_SHA256 = {_literal(spec_sha256)}",
        "",
        "Row = tuple[str, str, str, str, bool, str, str, tuple[str, ...], bool, bool]",
        "",
        "# fmt: off",
        "OPERATIONS: tuple[Row, ...] = (",
    ]
    lines.extend(f"    {_literal(tuple(record))}," for record in records)
    lines += [")", "# fmt: on"]
    return "\n".join(lines) + "\n"


def generate(spec_path: Path) -> tuple[str, list[OperationRecord]]:
    """Read *spec_path* and return the table source and its rows."""
    spec, sha = load_spec(spec_path)
    records = collect_operations(spec)
    return render(records, spec_path.name, sha), records


def _rows_of(source: str) -> dict[tuple[str, str, bool], tuple[object, ...]]:
    """Map each route of a rendered table to its row; unparsable lines are skipped."""
    rows: dict[tuple[str, str, bool], tuple[object, ...]] = {}
    for line in source.splitlines():
        if not line.startswith("    ("):
            continue
        try:
            row = ast.literal_eval(line.strip().rstrip(","))
        except (ValueError, SyntaxError):
            continue
        if isinstance(row, tuple) and len(row) >= 5:
            rows[(str(row[2]), str(row[3]), bool(row[4]))] = row
    return rows


def diff_summary(committed: str, fresh: str) -> str:
    """One line saying how the committed table differs from a fresh one."""
    old, new = _rows_of(committed), _rows_of(fresh)
    parts: list[str] = []
    for label, keys, rows in (
        ("added", sorted(new.keys() - old.keys()), new),
        ("removed", sorted(old.keys() - new.keys()), old),
        ("changed", sorted(k for k in new.keys() & old.keys() if new[k] != old[k]), new),
    ):
        if keys:
            examples = ", ".join(str(rows[k][1]) for k in keys[:3])
            more = ", ..." if len(keys) > 3 else ""
            parts.append(f"{len(keys)} {label} ({examples}{more})")
    return "; ".join(parts) or "rows identical, header differs (spec bytes changed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m proxy.tools.gen_operations", description=__doc__.splitlines()[0]
    )
    parser.add_argument("spec", type=Path, help="path to mistral-openapi.yaml")
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    try:
        source, records = generate(args.spec)
    except (OSError, yaml.YAMLError, SpecError) as exc:
        print(f"gen_operations: error: {exc}", file=sys.stderr)
        return 2

    output: Path = args.output
    if args.check:
        committed = output.read_text(encoding="utf-8") if output.exists() else ""
        if committed == source:
            print(f"{output.name} is up to date ({len(records)} operations)")
            return 0
        print(f"{output.name} is stale: {diff_summary(committed, source)}; regenerate it")
        return 1
    output.write_text(source, encoding="utf-8")
    print(f"wrote {output} ({len(records)} operations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
