"""Classifying requests to Mistral API operations, against the committed operation table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from proxy.operations import Operation, OperationIndex, extract_resource_ids
from proxy.tools import gen_operations

INDEX = OperationIndex.default()
ALL = INDEX.all()
PLAIN = [op for op in ALL if not op.stream_variant]
STREAMS = [op for op in ALL if op.stream_variant]
NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
PARAM_RE = re.compile(r"\{([^}/]+)\}")


def sample_path(op: Operation) -> tuple[str, dict[str, str]]:
    """Fill *op*'s template with distinctive values that collide with no literal segment."""
    params: dict[str, str] = {}

    def fill(match: re.Match[str]) -> str:
        params[match.group(1)] = f"x-{match.group(1)}-{len(params)}"
        return params[match.group(1)]

    return PARAM_RE.sub(fill, op.path), params


def test_table_counts_distinct_routes_and_stream_variants() -> None:
    assert len({(op.method, op.path) for op in PLAIN}) == 284
    assert len(PLAIN) == 284
    assert len(STREAMS) == 4
    assert len(ALL) == 288
    assert {op.name for op in STREAMS} == {
        "conversations.start_stream",
        "conversations.append_stream",
        "conversations.restart_stream",
        "audio.transcriptions.complete_stream",
    }
    # Every #stream variant has a plain twin on the same method and path.
    plain_routes = {(op.method, op.path) for op in PLAIN}
    assert all((op.method, op.path) in plain_routes for op in STREAMS)


@pytest.mark.parametrize("op", ALL, ids=lambda op: op.name)
def test_every_operation_classifies_back_to_itself(op: Operation) -> None:
    path, params = sample_path(op)
    found, found_params = INDEX.classify(op.method, path, stream=op.stream_variant)
    assert found == op
    assert found_params == params


def test_names_are_unique_and_dotted() -> None:
    names = [op.name for op in ALL]
    assert len(set(names)) == len(names)
    assert [n for n in names if not NAME_RE.match(n)] == []
    assert len({op.operation_id for op in ALL}) == len(ALL)


@pytest.mark.parametrize(
    ("name", "method", "path"),
    [
        ("chat.complete", "POST", "/v1/chat/completions"),
        ("fim.complete", "POST", "/v1/fim/completions"),
        ("embeddings.create", "POST", "/v1/embeddings"),
        ("models.list", "GET", "/v1/models"),
        ("models.get", "GET", "/v1/models/{model_id}"),
        ("agents.create", "POST", "/v1/agents"),
        ("agents.update_version", "PATCH", "/v1/agents/{agent_id}/version"),
        ("conversations.start", "POST", "/v1/conversations"),
        ("conversations.start_stream", "POST", "/v1/conversations"),
        ("conversations.append", "POST", "/v1/conversations/{conversation_id}"),
        ("conversations.append_stream", "POST", "/v1/conversations/{conversation_id}"),
        ("conversations.restart", "POST", "/v1/conversations/{conversation_id}/restart"),
        ("conversations.history", "GET", "/v1/conversations/{conversation_id}/history"),
        ("conversations.messages", "GET", "/v1/conversations/{conversation_id}/messages"),
        ("files.upload", "POST", "/v1/files"),
        ("files.download", "GET", "/v1/files/{file_id}/content"),
        ("batch.jobs.create", "POST", "/v1/batch/jobs"),
        ("libraries.documents.upload", "POST", "/v1/libraries/{library_id}/documents"),
    ],
)
def test_known_names(name: str, method: str, path: str) -> None:
    op = INDEX.by_name(name)
    assert (op.method, op.path) == (method, path)


def test_by_name_unknown_raises_key_error() -> None:
    with pytest.raises(KeyError):
        INDEX.by_name("chat.nope")


def test_operation_metadata_for_well_known_endpoints() -> None:
    chat = INDEX.by_name("chat.complete")
    assert (chat.request_kind, chat.response_kind, chat.stream_variant) == ("json", "json", False)
    assert chat.tags == ("chat",)
    assert INDEX.by_name("conversations.start_stream").response_kind == "sse"
    assert INDEX.by_name("files.upload").request_kind == "multipart"
    assert INDEX.by_name("files.download").response_kind == "binary"
    assert INDEX.by_name("models.list").request_kind == "none"
    assert INDEX.by_name("conversations.delete").response_kind == "none"
    assert INDEX.by_name("agents.list").deprecated is True
    assert INDEX.by_name("agents.create").deprecated is False
    assert {op.request_kind for op in ALL} <= {"json", "multipart", "none", "other"}
    assert {op.response_kind for op in ALL} <= {"json", "sse", "binary", "none"}


@pytest.mark.parametrize(
    ("method", "path", "name", "params"),
    [
        ("GET", "/v1/agents/pages", "agents.list_pages", {}),
        ("GET", "/v1/agents/ag_123", "agents.get", {"agent_id": "ag_123"}),
        # A literal that dead-ends falls back to the parameter at the same depth.
        ("GET", "/v1/agents/pages/versions", "agents.list_versions", {"agent_id": "pages"}),
        ("POST", "/v1/agents/completions", "agents.complete", {}),
        ("GET", "/v1/workflows/registrations", "workflows.list_registrations", {}),
        ("GET", "/v1/workflows/wf1", "workflows.get", {"workflow_identifier": "wf1"}),
        ("PUT", "/v1/workflows/archive", "workflows.bulk_archive", {}),
        ("PUT", "/v1/workflows/wf1/archive", "workflows.archive", {"workflow_identifier": "wf1"}),
        ("GET", "/v1/workflows/runs/r1", "workflows.runs.get", {"run_id": "r1"}),
        ("POST", "/v1/workflows/executions/cancel", "workflows.executions.batch_cancel", {}),
        (
            "POST",
            "/v1/workflows/executions/e1/cancel",
            "workflows.executions.cancel",
            {"execution_id": "e1"},
        ),
    ],
)
def test_literal_segments_beat_parameters(
    method: str, path: str, name: str, params: dict[str, str]
) -> None:
    op, found = INDEX.classify(method, path)
    assert op is not None
    assert (op.name, found) == (name, params)


def test_same_path_different_methods_use_their_own_parameter_names() -> None:
    get, get_params = INDEX.classify("GET", "/v1/connectors/github")
    patch, patch_params = INDEX.classify("PATCH", "/v1/connectors/github")
    assert get is not None and patch is not None
    assert (get.name, get_params) == ("connectors.get", {"connector_id_or_name": "github"})
    assert (patch.name, patch_params) == ("connectors.update", {"connector_id": "github"})


@pytest.mark.parametrize(
    ("path", "plain", "streaming"),
    [
        ("/v1/conversations", "conversations.start", "conversations.start_stream"),
        ("/v1/conversations/c1", "conversations.append", "conversations.append_stream"),
        ("/v1/conversations/c1/restart", "conversations.restart", "conversations.restart_stream"),
        (
            "/v1/audio/transcriptions",
            "audio.transcriptions.complete",
            "audio.transcriptions.complete_stream",
        ),
    ],
)
def test_stream_flag_selects_stream_variant(path: str, plain: str, streaming: str) -> None:
    op, _ = INDEX.classify("POST", path)
    op_stream, _ = INDEX.classify("POST", path, stream=True)
    assert op is not None and op_stream is not None
    assert (op.name, op.stream_variant) == (plain, False)
    assert (op_stream.name, op_stream.stream_variant) == (streaming, True)


def test_stream_flag_without_stream_variant_returns_plain_operation() -> None:
    op, _ = INDEX.classify("POST", "/v1/chat/completions", stream=True)
    assert op is not None and op.name == "chat.complete"
    op, params = INDEX.classify("GET", "/v1/conversations/c1", stream=True)
    assert op is not None and op.name == "conversations.get"
    assert params == {"conversation_id": "c1"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/unknown"),
        ("GET", "/"),
        ("GET", ""),
        ("GET", "/v1"),
        ("GET", "/v3/models"),
        ("PUT", "/v1/chat/completions"),
        ("BREW", "/v1/models"),
        ("GET", "/v1/models/m1/extra/segments"),
        ("GET", "/v1/conversations/c1/unknown"),
        ("GET", "/v1/models//"),
        ("GET", "/v1//history"),
        ("GET", "/v1/conversations//history"),
        ("POST", "v1/chat/completions/"),
        ("GET", "v1/models/m1"),
    ],
)
def test_unknown_routes_give_none(method: str, path: str) -> None:
    assert INDEX.classify(method, path) == (None, {})


@pytest.mark.parametrize(
    ("method", "path", "name", "params"),
    [
        ("POST", "/v1/chat/completions/", "chat.complete", {}),
        ("GET", "/v1/models/", "models.list", {}),
        ("GET", "/v1/models/m1/", "models.get", {"model_id": "m1"}),
        ("POST", "/v1/conversations/c1/", "conversations.append", {"conversation_id": "c1"}),
    ],
)
def test_trailing_slash_is_tolerated(
    method: str, path: str, name: str, params: dict[str, str]
) -> None:
    op, found = INDEX.classify(method, path)
    assert op is not None
    assert (op.name, found) == (name, params)


def test_method_is_case_insensitive() -> None:
    op, params = INDEX.classify("get", "/v1/files/f1")
    assert op is not None and op.name == "files.get"
    assert params == {"file_id": "f1"}


def test_query_string_is_not_part_of_the_path() -> None:
    # Callers pass request.path; a stray query string is not silently matched.
    assert INDEX.classify("GET", "/v1/models?limit=1") == (None, {})
    op, params = INDEX.classify("GET", "/v1/models/m1?x=1")
    assert op is not None and params == {"model_id": "m1?x=1"}


def test_parameter_values_are_returned_verbatim() -> None:
    op, params = INDEX.classify("GET", "/v1/models/ft:open-mistral-7b:587a6b29:20240514:7e773925")
    assert op is not None and op.name == "models.get"
    assert params == {"model_id": "ft:open-mistral-7b:587a6b29:20240514:7e773925"}
    _, params = INDEX.classify("GET", "/v1/files/a%2Fb")
    assert params == {"file_id": "a%2Fb"}


def test_default_index_is_shared() -> None:
    assert OperationIndex.default() is INDEX


def test_index_rejects_duplicate_names() -> None:
    op = INDEX.by_name("models.list")
    with pytest.raises(ValueError, match="unique"):
        OperationIndex([op, op])


def test_custom_index_classifies_its_own_operations() -> None:
    ops = [
        Operation("a", "things.list", "GET", "/things", False, "none", "json", ("t",), False),
        Operation("b", "things.get", "GET", "/things/{thing_id}", False, "none", "json", (), False),
        Operation("c", "things.watch", "GET", "/things/{thing_id}", True, "none", "sse", (), False),
    ]
    index = OperationIndex(ops)
    assert index.classify("GET", "/things") == (ops[0], {})
    assert index.classify("GET", "/things/t1") == (ops[1], {"thing_id": "t1"})
    assert index.classify("GET", "/things/t1", stream=True) == (ops[2], {"thing_id": "t1"})
    assert index.classify("GET", "/other") == (None, {})


# --- extract_resource_ids -------------------------------------------------------------------


def classify_and_extract(method: str, path: str, body: object) -> dict[str, str]:
    stream = isinstance(body, dict) and body.get("stream") is True
    op, params = INDEX.classify(method, path, stream=stream)
    return extract_resource_ids(op, params, body)


def test_ids_from_conversation_start_body() -> None:
    body = {"agent_id": "ag_1", "inputs": "hello", "stream": True, "store": True}
    assert classify_and_extract("POST", "/v1/conversations", body) == {"agent_id": "ag_1"}


def test_ids_from_conversation_start_with_model() -> None:
    body = {"model": "mistral-medium-latest", "inputs": [{"role": "user", "content": "hi"}]}
    assert classify_and_extract("POST", "/v1/conversations", body) == {
        "model": "mistral-medium-latest"
    }


def test_ids_from_conversation_restart() -> None:
    body = {"inputs": "again", "from_entry_id": "msg_42", "stream": False}
    assert classify_and_extract("POST", "/v1/conversations/conv_9/restart", body) == {
        "conversation_id": "conv_9",
        "from_entry_id": "msg_42",
    }


def test_ids_from_agents_completion_and_chat() -> None:
    body = {"agent_id": "ag_7", "messages": [{"role": "user", "content": "x"}]}
    assert classify_and_extract("POST", "/v1/agents/completions", body) == {"agent_id": "ag_7"}
    chat = {"model": "mistral-small-latest", "messages": []}
    assert classify_and_extract("POST", "/v1/chat/completions", chat) == {
        "model": "mistral-small-latest"
    }


def test_ids_from_nested_path_params() -> None:
    ids = classify_and_extract("GET", "/v1/libraries/lib_1/documents/doc_2/status", None)
    assert ids == {"library_id": "lib_1", "document_id": "doc_2"}
    ids = classify_and_extract("POST", "/v1/batch/jobs/job_3/cancel", None)
    assert ids == {"job_id": "job_3"}
    ids = classify_and_extract("DELETE", "/v1/admin/user-groups/g1/workspaces/w2", None)
    assert ids == {"group_uuid": "g1", "workspace_uuid": "w2"}


def test_non_id_path_params_are_left_out() -> None:
    assert classify_and_extract("GET", "/v1/agents/ag_1/versions/3", None) == {"agent_id": "ag_1"}
    assert classify_and_extract("GET", "/v1/workflows/deployments/d1", None) == {}


def test_path_param_wins_over_body_field() -> None:
    op = INDEX.by_name("agents.update")
    ids = extract_resource_ids(op, {"agent_id": "from_path"}, {"agent_id": "from_body"})
    assert ids == {"agent_id": "from_path"}


@pytest.mark.parametrize(
    "body",
    [
        None,
        b'{"agent_id": "x"}',
        '{"agent_id": "x"}',
        ["agent_id", "x"],
        42,
        {"agent_id": 5, "model": None, "from_entry_id": ["e"]},
        {"agent_id": "", "model": {"name": "m"}},
        {1: "x", None: "y"},
        object(),
    ],
)
def test_junk_bodies_yield_only_path_ids(body: object) -> None:
    op = INDEX.by_name("conversations.restart")
    assert extract_resource_ids(op, {"conversation_id": "c1"}, body) == {"conversation_id": "c1"}


def test_unknown_operation_still_extracts() -> None:
    assert extract_resource_ids(None, {}, {"model": "m"}) == {"model": "m"}
    assert extract_resource_ids(None, {}, None) == {}


# --- the generator, on a small synthetic spec (the real one is checked by .ci/check-spec) ---


def _op(operation_id: str, tags: list[str], **extra: object) -> dict[str, object]:
    ok: dict[str, object] = {"200": {"content": {"application/json": {"schema": {}}}}}
    return {"operationId": operation_id, "tags": tags, "responses": ok, **extra}


def _json_body() -> dict[str, object]:
    return {"content": {"application/json": {"schema": {}}}, "required": True}


MINI_SPEC: dict[str, object] = {
    "openapi": "3.1.0",
    "info": {"title": "mini", "version": "1"},
    "paths": {
        "/v1/chat/completions": {
            "post": _op(
                "chat_completion_v1_chat_completions_post",
                ["chat"],
                requestBody=_json_body(),
                responses={"200": {"content": {"application/json": {}, "text/event-stream": {}}}},
            )
        },
        "/v1/conversations": {
            "post": _op("agents_api_v1_conversations_start", ["beta.conversations"]),
            "get": _op("agents_api_v1_conversations_list", ["beta.conversations"]),
        },
        "/v1/conversations#stream": {
            "post": _op(
                "agents_api_v1_conversations_start_stream",
                ["beta.conversations"],
                requestBody=_json_body(),
                responses={"200": {"content": {"text/event-stream": {}}}},
            )
        },
        "/v1/files": {
            "post": _op(
                "files_api_routes_upload_file",
                ["files"],
                requestBody={"content": {"multipart/form-data": {}}},
            )
        },
        "/v1/files/{file_id}/content": {
            "get": _op(
                "files_api_routes_download_file",
                ["files"],
                responses={"200": {"content": {"application/octet-stream": {}}}},
            )
        },
        "/v1/batch/jobs/{job_id}": {
            "delete": _op(
                "jobs_api_routes_batch_delete_batch_job",
                ["batch"],
                deprecated=True,
                responses={"204": {"description": "gone"}},
            ),
            "put": _op(
                "jobs_api_routes_batch_replace_batch_job",
                ["batch"],
                requestBody={"content": {"text/plain": {}}},
            ),
        },
        "/v1/models/{model_id}": {
            "get": _op("retrieve_model_v1_models__model_id__get", ["models"]),
        },
        "/v1/things/{thing_id}#id": {
            "patch": _op("things_update", ["beta.things"]),
        },
    },
}


def _write_spec(tmp_path: Path, spec: dict[str, object]) -> Path:
    path = tmp_path / "mini-openapi.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _load_table(path: Path) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return namespace


def test_generator_writes_a_table_the_index_can_use(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, MINI_SPEC)
    out = tmp_path / "table.py"
    assert gen_operations.main([str(spec), "--output", str(out)]) == 0
    table = _load_table(out)
    rows = table["OPERATIONS"]
    assert isinstance(rows, tuple)
    ops = {op.name: op for op in (Operation(*row) for row in rows)}
    assert sorted(ops) == [
        "batch.jobs.delete",
        "batch.jobs.replace",
        "chat.complete",
        "conversations.list",
        "conversations.start",
        "conversations.start_stream",
        "files.download",
        "files.upload",
        "models.get",
        "things.update",
    ]
    assert ops["chat.complete"].response_kind == "json"
    assert (ops["conversations.start_stream"].stream_variant, ops["conversations.start"].path) == (
        True,
        "/v1/conversations",
    )
    assert ops["conversations.start_stream"].response_kind == "sse"
    assert ops["files.upload"].request_kind == "multipart"
    assert ops["files.download"].response_kind == "binary"
    assert ops["batch.jobs.delete"].response_kind == "none"
    assert ops["batch.jobs.delete"].deprecated is True
    assert ops["batch.jobs.replace"].request_kind == "other"
    assert ops["things.update"].path == "/v1/things/{thing_id}"
    assert ops["conversations.start"].tags == ("beta.conversations",)
    header = out.read_text(encoding="utf-8").splitlines()[:2]
    assert header[0].startswith("# Generated by")
    assert header[1] == f"# Source: mini-openapi.yaml sha256={table['SPEC_SHA256']}"

    index = OperationIndex(ops.values())
    assert (
        index.classify("POST", "/v1/conversations", stream=True)[0]
        == ops["conversations.start_stream"]
    )


def test_generator_is_deterministic_and_check_detects_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write_spec(tmp_path, MINI_SPEC)
    out = tmp_path / "table.py"
    assert gen_operations.main([str(spec), "--output", str(out)]) == 0
    first = out.read_bytes()
    assert gen_operations.main([str(spec), "--output", str(out)]) == 0
    assert out.read_bytes() == first
    assert gen_operations.main([str(spec), "--output", str(out), "--check"]) == 0

    out.write_text(first.decode().replace('"files.upload"', '"files.put"'), encoding="utf-8")
    capsys.readouterr()
    assert gen_operations.main([str(spec), "--output", str(out), "--check"]) == 1
    message = capsys.readouterr().out.strip()
    assert len(message.splitlines()) == 1
    assert "stale" in message and "1 changed (files.upload)" in message
    assert out.read_text(encoding="utf-8") != first.decode()  # --check never writes


def test_generator_fails_loudly_on_duplicate_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = dict(MINI_SPEC)
    spec["paths"] = {
        "/v1/models": {"get": _op("list_models_v1_models_get", ["models"])},
        "/v1/models/all": {"get": _op("list_models_v1_models_all_get", ["models"])},
    }
    path = _write_spec(tmp_path, spec)
    out = tmp_path / "table.py"
    assert gen_operations.main([str(path), "--output", str(out)]) == 2
    assert "duplicate name 'models.list'" in capsys.readouterr().err
    assert not out.exists()
