"""For every spec operation whose path names a resource id: a foreign id spelled another way
(percent-encoded id, percent-encoded literal segment, doubled slashes, HEAD for GET) gets the
same answer as the plain foreign id, for a user, a read_only caller and an admin of another
organisation; dot-segment spellings are refused with a Mistral-shaped 400 and never reach
upstream.

One in-process sidecar per role, in front of the mock; ids of the kinds the sidecar tracks
(agents, conversations, files, batch jobs) are real resources of organisation A, other ids
are made up (whatever upstream says of them, every spelling must hear the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from tenancy_support import (
    Answer,
    OrgA,
    answer_of,
    encode_char,
    encode_literal,
    make_org_a,
    make_outsiders,
    mock_seq,
    raw_call,
    template_params,
)

from proxy.operations import Operation, OperationIndex
from tests.auth.auth_support import auth_env, is_mistral_error
from tests.conftest import MockUpstream, SidecarFactory
from tests.security.door_support import Answer as RawAnswer

_ID_SUFFIXES = ("_id", "_uuid", "_id_or_name")
#: (operation name prefix, path parameter) -> the OrgA field holding a real foreign id.
_TRACKED = {("agents.", "agent_id"): "agent", ("conversations.", "conversation_id"): "conversation",
            ("files.", "file_id"): "file", ("batch.jobs.", "job_id"): "job"}
_MADE_UP = "res_7f3a9c"
_CONCURRENCY = 8


def _is_id(param: str) -> bool:
    return param.endswith(_ID_SUFFIXES) or param == "id"


def id_operations() -> list[Operation]:
    """Every operation (streaming twins aside: same method and path) naming an id."""
    return [op for op in OperationIndex.default().all()
            if not op.stream_variant and any(_is_id(p) for p in template_params(op.path))]


def test_the_matrix_covers_the_tracked_families() -> None:
    names = {op.name for op in id_operations()}
    assert len(names) > 150
    assert {"conversations.get", "conversations.append", "conversations.restart",
            "conversations.delete", "agents.get", "agents.update", "files.download",
            "batch.jobs.get", "batch.jobs.cancel"} <= names


@dataclass(frozen=True)
class Case:
    """One operation with its parameters filled in."""

    op: Operation
    template: str
    values: dict[str, str]
    id_param: str
    tracked: bool

    def fill(self, template: str, **override: str) -> str:
        """``template`` with the case's values (and ``override``) substituted."""
        path = template
        for name, value in {**self.values, **override}.items():
            path = path.replace("{" + name + "}", value)
        return path

    @property
    def plain(self) -> str:
        """The target as any client would send it."""
        return self.fill(self.template)

    def before_id(self, insert: str) -> str:
        """The plain target with ``insert`` put in front of the id segment."""
        marker = "{" + self.id_param + "}"
        return self.fill(self.template.replace(marker, insert + marker, 1))

    def spellings(self) -> dict[str, str]:
        """Targets that name the same resource as :attr:`plain` once made canonical."""
        version, rest = self.template[1:].split("/", 1)
        return {
            "encoded id": self.fill(self.template,
                                    **{self.id_param: encode_char(self.values[self.id_param])}),
            "encoded literal": self.fill(encode_literal(self.template)),
            "double slash after version": self.fill(f"/{version}//{rest}"),
            "double slash before id": self.before_id("/"),
        }

    def dot_segments(self) -> dict[str, str]:
        """Targets with dot-segments: refused, whatever they would resolve to."""
        return {"dot": self.before_id("./"), "dot-dot": self.before_id("x/../"),
                "encoded dot-dot": self.before_id("%2E%2E/")}

    @property
    def body(self) -> bytes | None:
        """A JSON body for operations that take one."""
        return b"{}" if self.op.request_kind == "json" else None


def cases(org: OrgA) -> list[Case]:
    """A case per id operation, foreign ids wherever the sidecar tracks the kind."""
    out = []
    for op in id_operations():
        params = template_params(op.path)
        values = {p: _MADE_UP if _is_id(p) else "x1" for p in params}
        tracked = False
        id_param = next(p for p in params if _is_id(p))
        for (prefix, param), field in _TRACKED.items():
            if op.name.startswith(prefix) and param in values:
                values[param] = getattr(org, field)
                tracked, id_param = True, param
        out.append(Case(op, op.path, values, id_param, tracked))
    return out


async def _gather(calls: list[Callable[[], Awaitable[RawAnswer]]]) -> list[RawAnswer]:
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(make: Callable[[], Awaitable[RawAnswer]]) -> RawAnswer:
        async with limit:
            return await make()

    return list(await asyncio.gather(*(one(c) for c in calls)))


@pytest.mark.parametrize("role", ["user", "read_only", "admin"])
async def test_foreign_ids_answer_alike_however_spelled(
    role: str, start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_sidecar(**auth_env({}))
    org = await make_org_a(sidecar.url, sidecar.env)
    caller = (await make_outsiders(sidecar.env)).by_role(role).key
    url = sidecar.url
    all_cases = cases(org)

    def send(method: str, target: str, case: Case) -> Callable[[], Awaitable[RawAnswer]]:
        return lambda: raw_call(url, method, target, caller, case.body)

    plain = await _gather([send(c.op.method, c.plain, c) for c in all_cases])
    wrong: list[str] = []
    expected: dict[str, Answer] = {}
    for case, reply in zip(all_cases, plain, strict=True):
        answer = answer_of(reply)
        expected[case.op.name] = answer
        if case.tracked and answer.status not in (403, 404):
            wrong.append(f"{case.op.method} {case.plain}: a foreign id answered {answer}")
        if case.tracked and role == "admin" and answer != Answer(404, "not_found"):
            wrong.append(f"{case.op.method} {case.plain}: admin of another org got {answer}")

    jobs: list[tuple[str, Case, Callable[[], Awaitable[RawAnswer]]]] = []
    for case in all_cases:
        for label, target in case.spellings().items():
            jobs.append((f"{label}: {case.op.method} {target}", case,
                         send(case.op.method, target, case)))
        if case.op.method == "GET":
            jobs.append((f"HEAD {case.plain}", case, send("HEAD", case.plain, case)))
    replies = await _gather([job[2] for job in jobs])
    for (label, case, _), reply in zip(jobs, replies, strict=True):
        want = expected[case.op.name]
        got = answer_of(reply)
        if label.startswith("HEAD "):
            got, want = Answer(got.status, None), Answer(want.status, None)
        if got != want:
            wrong.append(f"{label}: {got}, but the plain foreign id answers {want}")

    before = await mock_seq(mock_upstream)
    dots = [(f"{label}: {c.op.method} {target}", send(c.op.method, target, c))
            for c in all_cases for label, target in c.dot_segments().items()]
    for (label, _), reply in zip(dots, await _gather([d[1] for d in dots]), strict=True):
        if reply.status != 400 or not is_mistral_error(reply.json):
            wrong.append(f"{label}: expected a Mistral-shaped 400, got {reply.status} "
                         f"{reply.body[:120]!r}")
    assert await mock_seq(mock_upstream) == before, "a dot-segment target reached upstream"
    assert not wrong, f"{len(wrong)} mismatches:\n" + "\n".join(wrong[:60])
