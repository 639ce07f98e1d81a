"""Resources the sidecar has no ownership record for (made in the Mistral console, or whose
record never arrived) fail closed: only admins of the organisation configured to own them
(``auth.unowned_org``) see them, until ``mistral-sidecar adopt`` gives them an owner.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from tenancy_support import is_not_found, upstream_create

from tests.auth.auth_support import Key, auth_env, call, create_key, run_cli
from tests.conftest import MockUpstream, SidecarFactory, wait_for


@dataclass
class Unrecorded:
    """One resource of each kind, made directly upstream."""

    conversation: str
    agent: str
    file: str
    batch_job: str

    def targets(self) -> dict[str, tuple[str, str]]:
        """kind -> (path of the resource, path of its list)."""
        return {
            "conversation": (f"/v1/conversations/{self.conversation}", "/v1/conversations"),
            "agent": (f"/v1/agents/{self.agent}", "/v1/agents"),
            "file": (f"/v1/files/{self.file}", "/v1/files"),
            "batch_job": (f"/v1/batch/jobs/{self.batch_job}", "/v1/batch/jobs"),
        }

    def id_of(self, kind: str) -> str:
        """The id of the resource of ``kind``."""
        resource_id: str = getattr(self, kind)
        return resource_id


async def _made_upstream(mock: MockUpstream) -> Unrecorded:
    conversation = await upstream_create(mock.url, "POST", "/v1/conversations",
                                         {"model": "mistral-small-latest", "inputs": "hi"})
    agent = await upstream_create(mock.url, "POST", "/v1/agents",
                                  {"model": "mistral-small-latest", "name": "console"})
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", b'{"custom_id": "1", "body": {}}\n', filename="in.jsonl")
    file = await upstream_create(mock.url, "POST", "/v1/files", form=form)
    job = await upstream_create(mock.url, "POST", "/v1/batch/jobs",
                                {"endpoint": "/v1/chat/completions",
                                 "model": "mistral-small-latest", "input_files": [file["id"]]})
    return Unrecorded(conversation["conversation_id"], agent["id"], file["id"], job["id"])


async def _sees(url: str, key: Key, path: str, list_path: str, resource_id: str) -> bool:
    """Whether ``key`` reads the resource and finds it in its list (asserting both agree)."""
    reply = await call(url, "GET", path, key.key)
    listed = await call(url, "GET", list_path, key.key)
    assert listed.status == 200, listed.text
    in_list = resource_id in listed.text
    assert (reply.status == 200) == in_list, (key.owner, path, reply.status, in_list)
    if reply.status != 200:
        assert is_not_found(reply), reply.text
    return reply.status == 200


async def test_unrecorded_resources_are_for_the_unowned_orgs_admins_until_adopted(
    start_sidecar: SidecarFactory, store_env: dict[str, str], mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env(store_env, SIDECAR_AUTH_CACHE_TTL_SECONDS="0.2"))
    url, env = sidecar.url, sidecar.env
    keys = {
        "default admin": await create_key(env, "ops", "admin", "default"),
        "default user": await create_key(env, "dora", "user", "default"),
        "acme admin": await create_key(env, "root", "admin", "acme"),
        "alice": await create_key(env, "alice", "user", "acme"),
        "bob": await create_key(env, "bob", "user", "acme"),
        "globex admin": await create_key(env, "gary", "admin", "globex"),
    }
    made = await _made_upstream(mock_upstream)

    for kind, (path, list_path) in made.targets().items():
        for who, key in keys.items():
            seen = await _sees(url, key, path, list_path, made.id_of(kind))
            assert seen == (who == "default admin"), (kind, who)

    for kind in ("conversation", "file", "batch_job", "agent"):
        adopted = await run_cli(env, "adopt", "--kind", kind, made.id_of(kind),
                                "--org", "acme", "--owner", "alice")
        assert adopted.code == 0, adopted.err
        assert "acme" in adopted.out

    async def alice_sees_all() -> bool:
        return all([(await call(url, "GET", p, keys["alice"].key)).status == 200
                    for p, _ in made.targets().values()])

    await wait_for(alice_sees_all)
    for kind, (path, list_path) in made.targets().items():
        for who, key in keys.items():
            expected = who in ("alice", "acme admin") or (kind == "agent" and who == "bob")
            seen = await _sees(url, key, path, list_path, made.id_of(kind))
            assert seen == expected, (kind, who)


async def test_the_organisation_owning_unrecorded_resources_is_a_setting(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env({}, SIDECAR_AUTH_UNOWNED_ORG="platform"))
    url, env = sidecar.url, sidecar.env
    platform = await create_key(env, "pat", "admin", "platform")
    default = await create_key(env, "ops", "admin", "default")
    made = await _made_upstream(mock_upstream)
    for kind, (path, list_path) in made.targets().items():
        assert await _sees(url, platform, path, list_path, made.id_of(kind)), kind
        assert not await _sees(url, default, path, list_path, made.id_of(kind)), kind


async def test_adopt_checks_its_arguments_and_agents_adopt_still_works(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env({}, SIDECAR_AUTH_CACHE_TTL_SECONDS="0.2"))
    url, env = sidecar.url, sidecar.env
    user = await create_key(env, "alice", "user", "acme")
    made = await _made_upstream(mock_upstream)
    bad_kind = await run_cli(env, "adopt", "--kind", "library", "lib_1", "--org", "acme")
    assert bad_kind.code == 2 and "library" in bad_kind.err
    empty_org = await run_cli(env, "adopt", "--kind", "file", made.file, "--org", " ")
    assert empty_org.code == 2 and "--org" in empty_org.err
    legacy = await run_cli(env, "agents", "adopt", made.agent, "--org", "acme")
    assert legacy.code == 0, legacy.err

    async def visible() -> bool:
        return (await call(url, "GET", f"/v1/agents/{made.agent}", user.key)).status == 200

    await wait_for(visible)
