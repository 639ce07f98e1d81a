"""An admin of organisation B cannot reach organisation A's conversations, agents, files and
batch jobs, however the target is spelled, and B's lists show none of A's items.

Reproduces finding 2 of issue #16: percent-encoded ids and literal segments used to miss the
ownership records (and the list filter) while upstream decoded them and served A's data.
"""

from __future__ import annotations

import json

from tenancy_support import (
    encode_char,
    encode_literal,
    is_not_found,
    make_org_a,
    make_outsiders,
    mock_seq,
    raw_call,
)

from tests.auth.auth_support import auth_env, call
from tests.conftest import MockUpstream, SidecarFactory


async def test_an_admin_of_another_org_cannot_touch_org_a(
    start_sidecar: SidecarFactory, store_env: dict[str, str], mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env))
    url = sidecar.url
    a = await make_org_a(url, sidecar.env)
    b = (await make_outsiders(sidecar.env)).admin
    history = await call(url, "GET", f"/v1/conversations/{a.conversation}/history", a.user.key)
    entries = len(history.body["entries"])

    attempts = [
        ("GET", "/v1/conversations/{id}", a.conversation, None),
        ("GET", "/v1/conversations/{id}/history", a.conversation, None),
        ("GET", "/v1/conversations/{id}/messages", a.conversation, None),
        ("POST", "/v1/conversations/{id}", a.conversation, {"inputs": "hijack"}),
        ("POST", "/v1/conversations/{id}/restart", a.conversation,
         {"from_entry_id": a.entry, "inputs": "fork"}),
        ("DELETE", "/v1/conversations/{id}", a.conversation, None),
        ("GET", "/v1/agents/{id}", a.agent, None),
        ("PATCH", "/v1/agents/{id}", a.agent, {"description": "now globex's"}),
        ("GET", "/v1/files/{id}", a.file, None),
        ("GET", "/v1/files/{id}/content", a.file, None),
        ("GET", "/v1/files/{id}/url", a.file, None),
        ("GET", "/v1/batch/jobs/{id}", a.job, None),
        ("POST", "/v1/batch/jobs/{id}/cancel", a.job, None),
    ]
    before = await mock_seq(mock_upstream)
    unknown = {}
    for kind, path in (("conversations", "/v1/conversations/conv_nope"),
                       ("agents", "/v1/agents/ag_nope"), ("files", "/v1/files/nope"),
                       ("batch", "/v1/batch/jobs/nope")):
        unknown[kind] = await raw_call(url, "GET", path, b.key)
    wrong = []
    for method, template, resource_id, body in attempts:
        spellings = {
            "plain": template.replace("{id}", resource_id),
            "encoded id": template.replace("{id}", encode_char(resource_id)),
            "encoded last character": template.replace(
                "{id}", encode_char(resource_id, len(resource_id) - 1)),
            "encoded literal": encode_literal(template).replace("{id}", resource_id),
        }
        payload = json.dumps(body).encode() if body is not None else None
        methods = [method, "HEAD"] if method == "GET" else [method]
        for label, target in spellings.items():
            for verb in methods:
                reply = await raw_call(url, verb, target, b.key, payload)
                same_as_unknown = unknown[template.split("/")[2]]
                if verb == "HEAD":
                    ok = reply.status == 404
                else:
                    ok = is_not_found(reply) and reply.json == same_as_unknown.json
                if not ok:
                    wrong.append(f"{label}: {verb} {target} -> {reply.status} {reply.body[:100]!r}")
    assert not wrong, "\n".join(wrong)
    assert await mock_seq(mock_upstream) == before, "org B's attempts reached upstream"

    # Nothing of A's changed: the conversation is still there with its history, the agent
    # keeps its description, the job was not cancelled, the file downloads.
    history = await call(url, "GET", f"/v1/conversations/{a.conversation}/history", a.user.key)
    assert history.status == 200 and len(history.body["entries"]) == entries
    agent = await call(url, "GET", f"/v1/agents/{a.agent}", a.admin.key)
    assert agent.status == 200 and agent.body.get("description") != "now globex's"
    job = await call(url, "GET", f"/v1/batch/jobs/{a.job}", a.user.key)
    assert job.status == 200 and "CANCEL" not in job.body["status"]
    assert (await call(url, "GET", f"/v1/files/{a.file}/content", a.user.key)).status == 200


async def test_lists_show_no_foreign_items_however_spelled(
    start_sidecar: SidecarFactory
) -> None:
    sidecar = await start_sidecar(**auth_env({}))
    url = sidecar.url
    a = await make_org_a(url, sidecar.env)
    b = (await make_outsiders(sidecar.env)).admin
    lists = {
        "/v1/conversations": a.conversation,
        "/v1/agents": a.agent,
        "/v1/agents/pages": a.agent,
        "/v1/files": a.file,
        "/v1/batch/jobs": a.job,
    }
    for path, foreign in lists.items():
        for target in (path, encode_literal(path), path.replace("/v1/", "/v1//"), path + "/"):
            mine = await raw_call(url, "GET", target, a.admin.key)
            assert mine.status == 200 and foreign in mine.body.decode(), (target, mine.body)
            theirs = await raw_call(url, "GET", target, b.key)
            assert theirs.status == 200, (target, theirs.body)
            assert foreign not in theirs.body.decode(), f"{target} showed org A's item to B"
