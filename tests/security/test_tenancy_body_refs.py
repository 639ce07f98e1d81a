"""Ids inside request bodies are checked like ids in paths (finding 4 of issue #16): a body
naming another organisation's agent, file or conversation gets the very 404 the same id gets
in a path, and never reaches upstream; the same body naming the caller's own resource goes
through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from tenancy_support import OrgA, is_not_found, make_org_a, make_outsiders, mock_seq, raw_call

from tests.auth.auth_support import (
    Key,
    Reply,
    auth_env,
    call,
    create_agent,
    start_conversation,
    upload_file,
)
from tests.conftest import MockUpstream, Sidecar, SidecarFactory

MODEL = "mistral-small-latest"


def _file_message(file_id: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "read this"},
                                         {"type": "file", "file_id": file_id}]}]


@dataclass
class Case:
    """A request naming a resource in its body; ``{ref}`` is replaced by the id."""

    label: str
    who: str  # "admin" or "user" of organisation B
    method: str
    path: str
    body: Any
    kind: str  # agent | file | conversation

    def render(self, ref: str, own: dict[str, str]) -> tuple[str, bytes]:
        """The path and JSON body with ``ref`` in the body (and B's own ids elsewhere)."""
        text = json.dumps(self.body).replace("{ref}", ref)
        path = self.path
        for name, value in own.items():
            text = text.replace("{own_" + name + "}", value)
            path = path.replace("{own_" + name + "}", value)
        return path, text.encode()


CASES = [
    Case("agent handoffs (create)", "admin", "POST", "/v1/agents",
         {"model": MODEL, "name": "relay", "handoffs": ["{ref}"]}, "agent"),
    Case("agent handoffs (update)", "admin", "PATCH", "/v1/agents/{own_agent}",
         {"handoffs": ["{ref}"]}, "agent"),
    Case("batch inline request agent_id", "user", "POST", "/v1/batch/jobs",
         {"endpoint": "/v1/agents/completions", "requests": [
             {"custom_id": "1", "body": {"messages": [{"role": "user", "content": "x"}]}},
             {"custom_id": "2", "body": {"agent_id": "{ref}",
                                         "messages": [{"role": "user", "content": "hi"}]}}]},
         "agent"),
    Case("batch agent_id", "user", "POST", "/v1/batch/jobs",
         {"endpoint": "/v1/agents/completions", "agent_id": "{ref}",
          "requests": [{"custom_id": "1", "body": {"messages": []}}]}, "agent"),
    Case("batch input_files", "user", "POST", "/v1/batch/jobs",
         {"endpoint": "/v1/chat/completions", "model": MODEL,
          "input_files": ["{own_file}", "{ref}"]}, "file"),
    Case("batch inline request file chunk", "user", "POST", "/v1/batch/jobs",
         {"endpoint": "/v1/chat/completions", "model": MODEL,
          "requests": [{"custom_id": "1", "body": {"messages": _file_message("{ref}")}}]},
         "file"),
    Case("batch inline OCR document", "user", "POST", "/v1/batch/jobs",
         {"endpoint": "/v1/ocr", "model": "mistral-ocr-latest",
          "requests": [{"custom_id": "1",
                        "body": {"document": {"type": "file", "file_id": "{ref}"}}}]}, "file"),
    Case("batch inline request, unknown endpoint", "user", "POST", "/v1/batch/jobs",
         {"endpoint": "/v1/some/future/endpoint", "model": MODEL,
          "requests": [{"custom_id": "1", "body": {"messages": _file_message("{ref}")}}]},
         "file"),
    Case("chat file chunk", "user", "POST", "/v1/chat/completions",
         {"model": MODEL, "messages": _file_message("{ref}")}, "file"),
    Case("chat file chunk, streamed", "user", "POST", "/v1/chat/completions",
         {"model": MODEL, "stream": True, "messages": _file_message("{ref}")}, "file"),
    Case("agent completion file chunk", "user", "POST", "/v1/agents/completions",
         {"agent_id": "{own_agent}", "messages": _file_message("{ref}")}, "file"),
    Case("conversation start file chunk", "user", "POST", "/v1/conversations",
         {"model": MODEL, "inputs": _file_message("{ref}")}, "file"),
    Case("conversation append file chunk", "user", "POST", "/v1/conversations/{own_conv}",
         {"inputs": _file_message("{ref}")}, "file"),
    Case("conversation restart file chunk", "user", "POST",
         "/v1/conversations/{own_conv}/restart",
         {"from_entry_id": "{own_entry}", "inputs": _file_message("{ref}")}, "file"),
    Case("conversation start agent_id", "user", "POST", "/v1/conversations",
         {"agent_id": "{ref}", "inputs": "hi"}, "agent"),
    Case("conversation handoff entry", "user", "POST", "/v1/conversations",
         {"model": MODEL, "inputs": [
             {"type": "agent.handoff", "previous_agent_id": "{own_agent}",
              "previous_agent_name": "mine", "next_agent_id": "{ref}",
              "next_agent_name": "theirs"}]}, "agent"),
    Case("OCR document", "user", "POST", "/v1/ocr",
         {"model": "mistral-ocr-latest", "document": {"type": "file", "file_id": "{ref}"}},
         "file"),
    Case("dataset import from a file", "admin", "POST",
         "/v1/observability/datasets/ds_1/imports/from-file", {"file_id": "{ref}"}, "file"),
    Case("dataset import from conversations", "admin", "POST",
         "/v1/observability/datasets/ds_1/imports/from-playground",
         {"conversation_ids": ["{own_conv}", "{ref}"]}, "conversation"),
]


@dataclass
class World:
    """A sidecar, organisation A's resources and organisation B's callers and resources."""

    sidecar: Sidecar
    a: OrgA
    b: dict[str, Key]
    own: dict[str, str]
    not_found: dict[str, Any]


@pytest.fixture
async def world(start_sidecar: SidecarFactory) -> World:
    """Organisations A and B, each with an agent, a file and a conversation."""
    sidecar = await start_sidecar(**auth_env({}))
    url = sidecar.url
    a = await make_org_a(url, sidecar.env)
    outsiders = await make_outsiders(sidecar.env)
    b = {"admin": outsiders.admin, "user": outsiders.user}
    uploaded = await upload_file(url, b["user"].key)
    started = await call(url, "POST", "/v1/conversations", b["user"].key,
                         json={"model": MODEL, "inputs": "mine"})
    own = {"agent": await create_agent(url, b["admin"].key, "b-agent"),
           "file": uploaded.body["id"], "conv": started.body["conversation_id"],
           "entry": started.body["outputs"][0]["id"]}
    not_found = {}
    for kind, path in (("agent", f"/v1/agents/{a.agent}"), ("file", f"/v1/files/{a.file}"),
                       ("conversation", f"/v1/conversations/{a.conversation}")):
        reply = await call(url, "GET", path, b["admin"].key)
        assert is_not_found(reply)
        not_found[kind] = reply.body
    return World(sidecar, a, b, own, not_found)


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_a_foreign_id_in_the_body_is_not_found(
    case: Case, world: World, mock_upstream: MockUpstream
) -> None:
    url = world.sidecar.url
    key = world.b[case.who].key
    foreign = {"agent": world.a.agent, "file": world.a.file,
               "conversation": world.a.conversation}[case.kind]
    before = await mock_seq(mock_upstream)
    path, body = case.render(foreign, world.own)
    denied = await raw_call(url, case.method, path, key, body)
    assert is_not_found(denied), denied.body
    assert denied.json == world.not_found[case.kind]
    assert await mock_seq(mock_upstream) == before, "the request reached upstream"

    # The same request naming B's own resource goes through to upstream.
    own = {"agent": world.own["agent"], "file": world.own["file"],
           "conversation": world.own["conv"]}[case.kind]
    path, body = case.render(own, world.own)
    allowed = await raw_call(url, case.method, path, key, body)
    requests = await mock_upstream.requests()
    assert requests and requests[-1]["seq"] > before, (allowed.status, allowed.body)
    assert requests[-1]["path"] == path


async def test_escaped_keys_and_mixed_lists_do_not_slip_through(
    world: World, mock_upstream: MockUpstream
) -> None:
    url, key = world.sidecar.url, world.b["user"].key
    before = await mock_seq(mock_upstream)
    # "file\u005fid" is "file_id" to every JSON parser.
    escaped = (b'{"model": "%s", "messages": [{"role": "user", "content": '
               b'[{"type": "file", "file\\u005fid": "%s"}]}]}'
               % (MODEL.encode(), world.a.file.encode()))
    reply = await raw_call(url, "POST", "/v1/chat/completions", key, escaped)
    assert is_not_found(reply) and reply.json == world.not_found["file"]
    # A duplicated key: JSON parsers keep the last one, and so does the check.
    duplicated = (b'{"model": "%s", "agent_id": "%s", "agent_id": "%s", "inputs": "hi"}'
                  % (MODEL.encode(), world.own["agent"].encode(), world.a.agent.encode()))
    reply = await raw_call(url, "POST", "/v1/conversations", key, duplicated)
    assert is_not_found(reply) and reply.json == world.not_found["agent"]
    assert await mock_seq(mock_upstream) == before

    many = {"endpoint": "/v1/chat/completions", "model": MODEL,
            "input_files": [f"file-{i}" for i in range(1001)]}
    reply = await raw_call(url, "POST", "/v1/batch/jobs", key, json.dumps(many).encode())
    assert reply.status == 400 and reply.json["code"] == "too_many_references"


def _transcription_form(file_id: str, boundary: str = "b0undary") -> tuple[str, bytes]:
    parts = [("model", "voxtral-mini-latest"), ("file_id", file_id)]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        .encode() for name, value in parts) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


async def _post_form(url: str, key: str, content_type: str, body: bytes) -> Reply:
    async with aiohttp.ClientSession() as session, session.post(
        url + "/v1/audio/transcriptions", data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
    ) as resp:
        text = await resp.text()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return Reply(resp.status, resp.headers.copy(), parsed, text)


async def test_a_foreign_file_in_a_transcription_form_is_not_found(
    world: World, mock_upstream: MockUpstream
) -> None:
    url, key = world.sidecar.url, world.b["user"].key
    before = await mock_seq(mock_upstream)
    reply = await _post_form(url, key, *_transcription_form(world.a.file))
    assert is_not_found(reply) and reply.body == world.not_found["file"]
    # RFC 2231 spelling of the field name, as some clients send it.
    content_type, body = _transcription_form(world.a.file)
    body = body.replace(b'name="file_id"', b"name*=utf-8''file_id")
    reply = await _post_form(url, key, content_type, body)
    assert is_not_found(reply), reply.text
    broken = await _post_form(url, key, "multipart/form-data; boundary=zz", b"--zz\r\nnope")
    assert broken.status == 400, broken.text
    assert await mock_seq(mock_upstream) == before

    content_type, body = _transcription_form(world.own["file"])
    reply = await _post_form(url, key, content_type, body)
    requests = await mock_upstream.requests()
    assert requests and requests[-1]["seq"] > before, reply.text
    assert requests[-1]["path"] == "/v1/audio/transcriptions"
    # The form went upstream whole.
    assert requests[-1]["body_size"] == len(body)


async def test_org_admins_may_name_their_organisations_conversations(
    start_sidecar: SidecarFactory
) -> None:
    """An org admin sees every conversation of its organisation: in bodies as in paths."""
    sidecar = await start_sidecar(**auth_env({}))
    a = await make_org_a(sidecar.url, sidecar.env)
    mine = await start_conversation(sidecar.url, a.admin.key)
    body = {"conversation_ids": [mine, a.conversation]}
    path = "/v1/observability/datasets/ds_1/imports/from-playground"
    reply = await call(sidecar.url, "POST", path, a.admin.key, json=body)
    assert not is_not_found(reply), reply.text
