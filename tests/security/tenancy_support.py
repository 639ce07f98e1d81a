"""Helpers for the tenancy tests: two organisations, A's resources, and the same request
target spelled in the ways an attacker would try (percent-encoded, doubled slashes, HEAD,
dot-segments)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.auth.auth_support import (
    Key,
    Reply,
    call,
    create_agent,
    create_key,
    is_mistral_error,
    upload_file,
)
from tests.conftest import MOCK_KEY, MockUpstream
from tests.security.door_support import Answer as RawAnswer
from tests.security.raw_http import raw_request

__all__ = [
    "Answer",
    "OrgA",
    "Outsiders",
    "answer_of",
    "encode_char",
    "encode_literal",
    "is_not_found",
    "make_org_a",
    "make_outsiders",
    "mock_seq",
    "raw_call",
    "template_params",
    "upstream_create",
]

_PARAM = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class OrgA:
    """Organisation ``acme`` and what its members made through the sidecar."""

    admin: Key
    user: Key
    conversation: str
    entry: str
    agent: str
    file: str
    job: str


@dataclass(frozen=True)
class Outsiders:
    """Members of organisation ``globex``, one per default role."""

    admin: Key
    user: Key
    read_only: Key

    def by_role(self, role: str) -> Key:
        """The outsider holding ``role``."""
        key: Key = getattr(self, role)
        return key


async def make_org_a(url: str, env: Mapping[str, str]) -> OrgA:
    """Keys of ``acme`` and one of each tracked resource, made by its user (the agent by its
    admin: creating agents is an admin action by default)."""
    admin = await create_key(env, "root-a", "admin", "acme")
    user = await create_key(env, "alice", "user", "acme")
    started = await call(url, "POST", "/v1/conversations", user.key,
                         json={"model": "mistral-small-latest", "inputs": "secret plans"})
    assert started.status == 200, started.text
    uploaded = await upload_file(url, user.key, b'{"custom_id": "1", "body": {}}\n')
    assert uploaded.status == 200, uploaded.text
    job = await call(url, "POST", "/v1/batch/jobs", user.key,
                     json={"endpoint": "/v1/chat/completions", "model": "mistral-small-latest",
                           "input_files": [uploaded.body["id"]]})
    assert job.status == 200, job.text
    return OrgA(admin=admin, user=user, conversation=started.body["conversation_id"],
                entry=started.body["outputs"][0]["id"], agent=await create_agent(url, admin.key),
                file=uploaded.body["id"], job=job.body["id"])


async def make_outsiders(env: Mapping[str, str], org: str = "globex") -> Outsiders:
    """An admin, a user and a read_only caller of another organisation."""
    return Outsiders(admin=await create_key(env, "gary", "admin", org),
                     user=await create_key(env, "gina", "user", org),
                     read_only=await create_key(env, "greta", "read_only", org))


def encode_char(text: str, index: int = 0) -> str:
    """``text`` with its character at ``index`` percent-encoded (``conv_1`` -> ``%63onv_1``)."""
    return text[:index] + "".join(f"%{b:02X}" for b in text[index].encode()) + \
        text[index + 1:]


def encode_literal(path: str) -> str:
    """``path`` with the last letter of its first literal segment after the version
    percent-encoded (``/v1/conversations/x`` -> ``/v1/conversation%73/x``)."""
    segments = path.split("/")
    for i in range(2, len(segments)):
        segment = segments[i]
        letters = [j for j, ch in enumerate(segment) if ch.isalpha()]
        if letters and not segment.startswith("{"):
            segments[i] = encode_char(segment, letters[-1])
            return "/".join(segments)
    raise ValueError(f"no literal segment in {path}")


@dataclass(frozen=True)
class Answer:
    """What a caller can tell apart in an answer: its status and error code."""

    status: int
    code: Any


def answer_of(reply: RawAnswer | Reply) -> Answer:
    """The :class:`Answer` of a raw or client reply."""
    body = reply.json if isinstance(reply, RawAnswer) else reply.body
    code = body.get("code") if isinstance(body, dict) else None
    return Answer(reply.status, code)


async def raw_call(base_url: str, method: str, target: str, key: str | None = None,
                   json_body: bytes | None = None) -> RawAnswer:
    """One request sent byte for byte (the target is not normalised by any client)."""
    head = [f"{method} {target} HTTP/1.1"]
    if key is not None:
        head.append(f"Authorization: Bearer {key}")
    if json_body is not None:
        head.append("Content-Type: application/json")
    return await raw_request(base_url, "\n".join(head), json_body or b"")


async def mock_seq(mock: MockUpstream) -> int:
    """The sequence number of the last request the mock received (0 for none)."""
    requests = await mock.requests()
    return int(requests[-1]["seq"]) if requests else 0


async def upstream_create(mock_url: str, method: str, path: str, json: Any = None,
                          form: aiohttp.FormData | None = None) -> Any:
    """Create something directly at the mock, as the Mistral console would (no sidecar, so
    no ownership record); returns the JSON answer."""
    async with aiohttp.ClientSession() as session, session.request(
        method, mock_url + path, json=json, data=form,
        headers={"Authorization": f"Bearer {MOCK_KEY}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def template_params(path: str) -> list[str]:
    """The parameter names of a path template, in order."""
    return _PARAM.findall(path)


def is_not_found(reply: RawAnswer | Reply) -> bool:
    """Whether ``reply`` is the sidecar's Mistral-shaped 404."""
    body = reply.json if isinstance(reply, RawAnswer) else reply.body
    return reply.status == 404 and is_mistral_error(body) and body["code"] == "not_found"
