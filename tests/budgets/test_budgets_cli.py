"""``mistral-sidecar budgets set/list/clear``: what an operator types and reads. Mistakes are
one line and exit code 2, and change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.budgets.budgets_support import budget_env, run_cli


@pytest.fixture
def env(tmp_path: Path, store_env: dict[str, str]) -> dict[str, str]:
    return budget_env(tmp_path, store_env)


async def listed(env: dict[str, str]) -> list[dict[str, object]]:
    result = await run_cli(env, "budgets", "list", "--json")
    assert result.code == 0, result.err
    rows: list[dict[str, object]] = json.loads(result.out)
    return rows


async def test_set_creates_then_replaces_and_list_shows_each_budget(
        env: dict[str, str]) -> None:
    first = await run_cli(env, "budgets", "set", "--owner", "alice", "--org", "acme",
                          "--period", "day", "--limit", "12.5", "--hard")
    assert first.code == 0, first.err
    assert first.out.startswith("set bgt_")
    assert first.out.rstrip().endswith(
        ": owner alice (org acme), every model, daily, 12.5 USD, hard")
    budget_id = first.out.split()[1].rstrip(":")
    again = await run_cli(env, "budgets", "set", "--owner", "alice", "--org", "acme",
                          "--period", "day", "--limit", "20", "--soft")
    assert again.out.split()[1].rstrip(":") == budget_id
    model = await run_cli(env, "budgets", "set", "--org", "acme", "--model", "meter-a",
                          "--period", "month", "--limit", "0.000001", "--hard")
    assert model.code == 0, model.err

    rows = await listed(env)
    assert [(r["id"] == budget_id, r["scope"], r["subject"], r["owner_org"], r["model"],
             r["period"], r["limit"], r["currency"], r["mode"], r["spent"], r["percent"])
            for r in rows] == [
        (True, "owner", "alice", "acme", None, "day", "20", "USD", "soft", "0", 0.0),
        (False, "org", "acme", None, "meter-a", "month", "0.000001", "USD", "hard", "0", 0.0)]
    table = await run_cli(env, "budgets", "list")
    header, owner_line, org_line = table.out.splitlines()
    assert header.split() == ["id", "scope", "subject", "org", "model", "period", "limit",
                              "spent", "used", "mode"]
    assert owner_line.split()[1:] == ["owner", "alice", "acme", "all", "day", "20", "USD",
                                      "0", "0%", "soft"]
    assert org_line.split()[1:] == ["org", "acme", "-", "meter-a", "month", "0.000001",
                                    "USD", "0", "0%", "hard"]


async def test_clear_by_subject_or_id(env: dict[str, str]) -> None:
    for period in ("day", "month"):
        await run_cli(env, "budgets", "set", "--key", "k1", "--period", period,
                      "--limit", "5", "--hard")
    other = await run_cli(env, "budgets", "set", "--key", "k2", "--period", "day",
                          "--limit", "5", "--soft")
    cleared = await run_cli(env, "budgets", "clear", "--key", "k1", "--period", "month")
    assert cleared.code == 0, cleared.err
    assert cleared.out.startswith("cleared bgt_") and "key k1, every model, monthly" in (
        cleared.out)
    assert [(r["subject"], r["period"]) for r in await listed(env)] == [
        ("k1", "day"), ("k2", "day")]
    by_id = await run_cli(env, "budgets", "clear", "--id", other.out.split()[1].rstrip(":"))
    assert by_id.code == 0, by_id.err
    assert (await run_cli(env, "budgets", "clear", "--key", "k1")).code == 0
    assert await listed(env) == []
    nothing = await run_cli(env, "budgets", "clear", "--key", "k1")
    assert (nothing.code, nothing.err) == (1, "mistral-sidecar: no budget matches\n")
    assert (await run_cli(env, "budgets", "list")).out == "no budgets\n"


@pytest.mark.parametrize(("args", "says"), [
    (("--owner", "a", "--period", "day", "--limit", "-5", "--hard"), "--limit: must be more"),
    (("--owner", "a", "--period", "day", "--limit", "0", "--hard"), "--limit: must be more"),
    (("--owner", "a", "--period", "day", "--limit", "NaN", "--hard"), "--limit: expected a "
                                                                       "finite amount"),
    (("--owner", "a", "--period", "day", "--limit", "ten", "--hard"), "--limit: expected an"),
    (("--owner", "a", "--period", "day", "--limit", "1.0000001", "--hard"), "at most 6 "
                                                                            "decimals"),
    (("--owner", "a", "--period", "week", "--limit", "1", "--hard"), "invalid choice: 'week'"),
    (("--owner", "a", "--limit", "1", "--hard"), "required: --period"),
    (("--owner", "a", "--period", "day", "--limit", "1"), "one of the arguments --hard "
                                                          "--soft is required"),
    (("--owner", "a", "--period", "day", "--limit", "1", "--hard", "--soft"), "not allowed "
                                                                              "with"),
    (("--period", "day", "--limit", "1", "--hard"), "name whose budget it is"),
    (("--key", "k", "--org", "o", "--period", "day", "--limit", "1", "--hard"), "--key names "
                                                                                "one key"),
    (("--owner", " ", "--period", "day", "--limit", "1", "--hard"), "--owner: expected a "
                                                                   "non-empty name"),
])
async def test_a_mistake_in_set_is_one_line_and_exit_2(
        env: dict[str, str], args: tuple[str, ...], says: str) -> None:
    result = await run_cli(env, "budgets", "set", *args)
    assert result.code == 2
    assert len(result.err.splitlines()) == 1, result.err
    assert says in result.err
    assert result.out == ""
    assert await listed(env) == []


async def test_a_mistake_in_clear_is_one_line_and_exit_2(env: dict[str, str]) -> None:
    for args in ((), ("--id", "bgt_1", "--key", "k"), ("--period", "year")):
        result = await run_cli(env, "budgets", "clear", *args)
        assert result.code == 2, args
        assert len(result.err.splitlines()) == 1, result.err
