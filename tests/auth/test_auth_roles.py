"""Roles: every action for every role, the operation -> action table, YAML role tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from auth_support import (
    Key,
    auth_env,
    call,
    create_agent,
    create_key,
    is_mistral_error,
    start_conversation,
    upload_file,
)

from plugins.auth.permissions import ACTIONS, ADMIN_ACTIONS, ORG_ADMIN, UNMAPPED, action_for
from proxy.loader import load
from proxy.operations import OperationIndex
from proxy.settings import ConfigError
from tests.conftest import MOCK_KEY, SidecarFactory

CHAT_MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Case:
    """A representative request for one action; ``{name}`` placeholders are filled per role."""

    method: str
    path: str
    body: Any = None


CASES: dict[str, Case] = {
    "list_agents": Case("GET", "/v1/agents"),
    "read_agent": Case("GET", "/v1/agents/{agent}"),
    "create_agent": Case("POST", "/v1/agents", {"model": "mistral-small-latest", "name": "n"}),
    "update_agent": Case("PATCH", "/v1/agents/{agent}", {"description": "changed"}),
    "use_agent": Case("POST", "/v1/agents/completions",
                      {"agent_id": "{agent}", "messages": CHAT_MESSAGES}),
    "list_conversations": Case("GET", "/v1/conversations"),
    "read_conversation": Case("GET", "/v1/conversations/{conv}"),
    "start_conversation": Case("POST", "/v1/conversations",
                               {"model": "mistral-small-latest", "inputs": "hi"}),
    "append_conversation": Case("POST", "/v1/conversations/{conv}", {"inputs": "more"}),
    "restart_conversation": Case("POST", "/v1/conversations/{conv}/restart",
                                 {"from_entry_id": "{entry}", "inputs": "again"}),
    "use_model": Case("POST", "/v1/chat/completions",
                      {"model": "mistral-small-latest", "messages": CHAT_MESSAGES}),
    "list_models": Case("GET", "/v1/models"),
    "read_model": Case("GET", "/v1/models/mistral-small-latest"),
    "manage_models": Case("POST", "/v1/fine_tuning/models/ft:none/archive"),
    "list_files": Case("GET", "/v1/files"),
    "read_file": Case("GET", "/v1/files/{file}"),
    "upload_file": Case("POST", "/v1/files"),
    "list_batch_jobs": Case("GET", "/v1/batch/jobs"),
    "read_batch_job": Case("GET", "/v1/batch/jobs/{job}"),
    "create_batch_job": Case("POST", "/v1/batch/jobs", {
        "endpoint": "/v1/chat/completions", "model": "mistral-small-latest",
        "requests": [{"custom_id": "1", "body": {"messages": CHAT_MESSAGES}}]}),
    "cancel_batch_job": Case("POST", "/v1/batch/jobs/{job}/cancel"),
    "read_account": Case("GET", "/v1/users/me"),
    "write_account": Case("POST", "/v1/admin/users", {}),
    "read_voices": Case("GET", "/v1/audio/voices"),
    "write_voices": Case("POST", "/v1/audio/voices", {}),
    "read_connectors": Case("GET", "/v1/connectors"),
    "write_connectors": Case("POST", "/v1/connectors", {}),
    "read_libraries": Case("GET", "/v1/libraries"),
    "write_libraries": Case("POST", "/v1/libraries", {"name": "docs"}),
    "read_observability": Case("GET", "/v1/observability/judges"),
    "write_observability": Case("POST", "/v1/observability/judges", {}),
    "read_rag": Case("GET", "/v1/rag/deployments"),
    "write_rag": Case("PUT", "/v1/rag/deployments", {}),
    "read_workflows": Case("GET", "/v1/workflows"),
    "write_workflows": Case("PUT", "/v1/workflows/archive", {}),
    "read_prompts": Case("GET", "/v2/prompts"),
    "write_prompts": Case("POST", "/v2/prompts", {}),
    "read_skills": Case("GET", "/v2/skills"),
    "write_skills": Case("POST", "/v2/skills", {}),
    UNMAPPED: Case("GET", "/v1/not-in-the-spec"),
    # Destructive cases last: they consume their resource.
    "archive_conversation": Case("DELETE", "/v1/conversations/{conv}"),
    "delete_file": Case("DELETE", "/v1/files/{file}"),
    "delete_agent": Case("DELETE", "/v1/agents/{spare_agent}"),
}

_READS = {"list_agents", "read_agent", "list_conversations", "read_conversation",
          "list_models", "read_model", "list_files", "read_file", "list_batch_jobs",
          "read_batch_job"}
#: The guide's permission table, extended to the whole API (what the defaults promise).
EXPECTED: dict[str, set[str]] = {
    # Requests outside the spec: no role, admin's "*" included (auth.unmapped_roles is empty).
    "admin": set(CASES) - {UNMAPPED},
    "user": _READS | {"use_model", "use_agent", "start_conversation", "append_conversation",
                      "restart_conversation", "archive_conversation", "upload_file",
                      "delete_file", "create_batch_job", "cancel_batch_job"},
    "read_only": set(_READS),
}


def test_every_action_has_a_case() -> None:
    # The admin API's actions are not proxy operations: tests/admin exercises them.
    assert set(CASES) == (ACTIONS | {UNMAPPED}) - {ORG_ADMIN, *ADMIN_ACTIONS}


def test_every_spec_operation_maps_to_an_action() -> None:
    operations = OperationIndex.default().all()
    assert len(operations) > 250
    for op in operations:
        action = action_for(op)
        assert action in ACTIONS and action not in (UNMAPPED, ORG_ADMIN), op.name
        if op.method == "GET":
            assert action.startswith(("list_", "read_")), (op.name, action)
    by_name = {op.name: action_for(op) for op in operations}
    for name in ("chat.complete", "fim.complete", "embeddings.create", "classifiers.moderate",
                 "classifiers.moderate_chat", "classifiers.classify", "ocr.process"):
        assert by_name[name] == "use_model"
    assert by_name["conversations.start_stream"] == "start_conversation"
    assert by_name["conversations.append_stream"] == "append_conversation"
    assert by_name["conversations.restart_stream"] == "restart_conversation"
    assert by_name["conversations.delete"] == "archive_conversation"
    assert by_name["agents.create"] == "create_agent"
    assert action_for(None) == UNMAPPED


async def _prepare(url: str, admin: Key, caller: Key) -> dict[str, str]:
    """Resources the cases refer to, owned by the caller where its role may create them."""
    creator = caller if caller.role in ("admin", "user") else admin
    start = await call(url, "POST", "/v1/conversations", creator.key,
                       json={"model": "mistral-small-latest", "inputs": "hello"})
    assert start.status == 200, start.text
    uploaded = await upload_file(url, creator.key)
    assert uploaded.status == 200, uploaded.text
    job = await call(url, "POST", "/v1/batch/jobs", creator.key,
                     json={"endpoint": "/v1/chat/completions", "input_files": [uploaded.body["id"]],
                           "model": "mistral-small-latest"})
    assert job.status == 200, job.text
    return {
        "agent": await create_agent(url, admin.key),
        "spare_agent": await create_agent(url, admin.key, "spare"),
        "conv": start.body["conversation_id"],
        "entry": start.body["outputs"][0]["id"],
        "file": uploaded.body["id"],
        "job": job.body["id"],
    }


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


@pytest.mark.parametrize("role", ["admin", "user", "read_only"])
async def test_role_matrix(role: str, start_sidecar: SidecarFactory,
                           mock_upstream: Any) -> None:
    sidecar = await start_sidecar(**auth_env({}))
    admin = await create_key(sidecar.env, "root", "admin")
    caller = admin if role == "admin" else await create_key(sidecar.env, "someone", role)
    names = await _prepare(sidecar.url, admin, caller)
    wrong: list[str] = []
    for action, case in CASES.items():
        if action == "upload_file":
            reply = await upload_file(sidecar.url, caller.key)
        else:
            reply = await call(sidecar.url, case.method, _fill(case.path, names), caller.key,
                               json=_fill(case.body, names))
        allowed = action in EXPECTED[role]
        if allowed and reply.status in (401, 403):
            wrong.append(f"{action}: expected allowed, got {reply.status} {reply.text}")
        elif not allowed and (reply.status != 403 or not is_mistral_error(reply.body)
                              or reply.body["type"] != "permission_error"):
            wrong.append(f"{action}: expected 403, got {reply.status} {reply.text[:200]}")
    assert not wrong, "\n".join(wrong)


async def test_own_resources_work_for_users(start_sidecar: SidecarFactory) -> None:
    """The allowed cases really succeed for a user acting on its own resources."""
    sidecar = await start_sidecar(**auth_env({}))
    admin = await create_key(sidecar.env, "root", "admin")
    user = await create_key(sidecar.env, "alice", "user")
    names = await _prepare(sidecar.url, admin, user)
    for action in ("read_agent", "read_conversation", "append_conversation",
                   "restart_conversation", "read_file", "read_batch_job", "cancel_batch_job",
                   "archive_conversation", "delete_file"):
        case = CASES[action]
        reply = await call(sidecar.url, case.method, _fill(case.path, names), user.key,
                           json=_fill(case.body, names))
        assert reply.status in (200, 204), (action, reply.status, reply.text)


async def test_roles_are_configurable_in_yaml(start_sidecar: SidecarFactory,
                                              tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "auth:\n"
        "  roles:\n"
        "    admin: ['*']\n"
        "    user: [use_model, start_conversation, read_conversation]\n"
        "    read_only: [list_models, use_model]\n"
        "    auditor: [list_conversations, org_admin]\n")
    sidecar = await start_sidecar(config_file=config, **auth_env({}))
    cli_env = {**sidecar.env, "SIDECAR_CONFIG": str(config)}
    reader = await create_key(cli_env, "rita", "read_only")
    auditor = await create_key(cli_env, "audrey", "auditor")
    user = await create_key(cli_env, "alice", "user")
    chat = {"model": "mistral-small-latest", "messages": CHAT_MESSAGES}
    assert (await call(sidecar.url, "POST", "/v1/chat/completions", reader.key,
                       json=chat)).status == 200
    assert (await call(sidecar.url, "GET", "/v1/files", reader.key)).status == 403
    conversation = await start_conversation(sidecar.url, user.key)
    assert (await call(sidecar.url, "GET", "/v1/conversations", user.key)).status == 403
    listed = await call(sidecar.url, "GET", "/v1/conversations", auditor.key)
    assert listed.status == 200 and [c["id"] for c in listed.body] == [conversation]
    assert (await call(sidecar.url, "POST", "/v1/chat/completions", auditor.key,
                       json=chat)).status == 403


def test_bad_role_tables_and_missing_upstream_key_stop_start_up(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("auth:\n  roles:\n    user: [use_model, fly]\n")
    env = {"MISTRAL_API_KEY": MOCK_KEY, "SIDECAR_PLUGINS_CHAIN": "store,auth",
           "SIDECAR_SERVER_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as caught:
        load(config, env)
    assert any("auth.roles" in p and "fly" in p for p in caught.value.problems)

    with pytest.raises(ConfigError) as caught:
        load(None, {k: v for k, v in env.items() if k != "MISTRAL_API_KEY"})
    assert "MISTRAL_API_KEY: required when SIDECAR_AUTH_MODE=keys" in caught.value.problems
    load(None, {**{k: v for k, v in env.items() if k != "MISTRAL_API_KEY"},
                "SIDECAR_AUTH_MODE": "passthrough"})

    with pytest.raises(ConfigError) as caught:
        load(None, {**env, "SIDECAR_PLUGINS_CHAIN": "auth,store"})
    assert any("store plugin before it" in p for p in caught.value.problems)
