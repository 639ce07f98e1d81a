"""``mistral-sidecar usage`` shows the budgets in force with their spend this period, through
the ``usage_report_sections`` hook (the persistence plugin never learns about budgets):
after its table in text, under ``sections`` of ``--json --sections``. ``usage --json``
stays the list of rows it always was; without budgets, or without the budgets plugin, the
output is what it was before budgets existed. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.budgets.budgets_support import (
    CHAIN,
    HI_COST,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    chat,
    create_key,
    run_cli,
    set_budget,
)
from tests.conftest import SidecarFactory, wait_for

WITH_USAGE = CHAIN + ",persistence"
WITHOUT_BUDGETS = "prices,logs,store,auth,ratelimit,persistence"
TITLE = "Budgets this period"
PLUGINS = "tests.budgets.usage_section_plugins"


def usage_env(tmp_path: Path, store_env: dict[str, str], **extra: str) -> dict[str, str]:
    """A sidecar that prices, keeps budgets and records usage in ``store_env``."""
    return budget_env(tmp_path, store_env, SIDECAR_PLUGINS_CHAIN=WITH_USAGE,
                      SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS="0.02", **extra)


def chained(env: dict[str, str], chain: str) -> dict[str, str]:
    """``env`` with another chain."""
    return {**env, "SIDECAR_PLUGINS_CHAIN": chain}


async def out(env: dict[str, str], *args: str) -> str:
    """What ``mistral-sidecar ARGS`` prints; it must succeed and say nothing on stderr."""
    result = await run_cli(env, *args)
    assert (result.code, result.err) == (0, ""), result.err
    return result.out


async def recorded(env: dict[str, str], requests: int) -> None:
    """Wait until the usage log counts ``requests``."""

    async def counted() -> bool:
        rows = json.loads(await out(env, "usage", "--json"))
        return sum(int(row["requests"]) for row in rows) == requests

    await wait_for(counted, timeout=10, interval=0.05)


async def spent(env: dict[str, str], expected: dict[str, str]) -> list[dict[str, Any]]:
    """Wait until ``budgets list`` shows the spend ``expected`` (budget id -> spent);
    return its rows."""
    rows: list[dict[str, Any]] = []

    async def shown() -> bool:
        nonlocal rows
        rows = json.loads(await out(env, "budgets", "list", "--json"))
        return {row["id"]: row["spent"] for row in rows} == expected

    await wait_for(shown, timeout=10, interval=0.05)
    return rows


def budget_id(result_out: str) -> str:
    """The id ``budgets set`` printed."""
    return result_out.split()[1].rstrip(":")


async def test_usage_shows_each_budget_with_its_spend_in_text_and_json(
        start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path) -> None:
    await after_midnight_margin()
    sidecar = await start_sidecar(**usage_env(tmp_path, store_env))
    env = sidecar.env
    alice = await create_key(env, "alice", "user", "acme")
    bob = await create_key(env, "bob", "user", "beta")
    ids = {name: budget_id((await set_budget(env, *args)).out) for name, args in {
        "alice_day": ("--owner", "alice", "--org", "acme", "--period", "day", "--limit", "10",
                      "--hard"),
        "bob_key": ("--key", bob.key_id, "--period", "month", "--limit", "30", "--soft"),
        "acme": ("--org", "acme", "--period", "month", "--limit", "100", "--soft"),
        "alice_b": ("--owner", "alice", "--model", "meter-b", "--period", "month",
                    "--limit", "5", "--hard"),
        "alice_key": ("--key", alice.key_id, "--period", "day", "--limit", "20", "--soft"),
    }.items()}
    await budgets_in_force(sidecar.url, 5)
    for key in (alice, alice, bob):
        assert (await chat(sidecar.url, key.key, model="meter-a" if key is alice
                           else "meter-b")).status == 200
    await recorded(env, 3)
    two, one = str(2 * HI_COST), str(HI_COST)
    rows = await spent(env, {ids["alice_day"]: two, ids["bob_key"]: one, ids["acme"]: two,
                             ids["alice_b"]: "0", ids["alice_key"]: two})

    # The table as before, then the budgets exactly as `budgets list` prints them.
    table = await out(chained(env, WITHOUT_BUDGETS), "usage")
    listed = await out(env, "budgets", "list")
    assert await out(env, "usage") == f"{table}\n{TITLE}\n{listed}"
    lines = {line.split()[0]: line.split() for line in listed.splitlines()}
    assert lines[ids["alice_day"]][1:] == ["owner", "alice", "acme", "all", "day", "10", "USD",
                                           two, "60%", "hard"]

    # --json is the list of rows it always was; --sections adds the sections around it.
    rows_json = json.loads(await out(env, "usage", "--json"))
    assert isinstance(rows_json, list)
    assert [(r["owner_id"], r["model"], r["requests"]) for r in rows_json] == [
        ("alice", "meter-a", 2), ("bob", "meter-b", 1)]
    report = json.loads(await out(env, "usage", "--json", "--sections"))
    assert report == {"usage": rows_json,
                      "sections": {"budgets": {"title": TITLE, "rows": rows}}}
    assert [(r["id"], r["spent"], r["percent"]) for r in rows] == [
        (ids["alice_day"], two, 60.0), (ids["bob_key"], one, 10.0), (ids["acme"], two, 6.0),
        (ids["alice_b"], "0", 0.0), (ids["alice_key"], two, 30.0)]

    # --owner: that owner's budgets and its keys'; an organisation's budget is shared.
    mine = json.loads(await out(env, "usage", "--owner", "alice", "--json", "--sections"))
    assert [r["owner_id"] for r in mine["usage"]] == ["alice"]
    assert [r["id"] for r in mine["sections"]["budgets"]["rows"]] == [
        ids["alice_day"], ids["alice_b"], ids["alice_key"]]
    text = await out(env, "usage", "--owner", "alice")
    assert text.count(ids["alice_key"]) == 1 and ids["bob_key"] not in text
    assert ids["acme"] not in text
    # A name that is a key id or an organisation is not an owner of their budgets.
    for stranger in (bob.key_id, "acme", "ALICE", "alice "):
        other = json.loads(await out(env, "usage", "--owner", stranger, "--json",
                                     "--sections"))
        assert other == {"usage": [], "sections": {}}, stranger
        assert TITLE not in await out(env, "usage", "--owner", stranger)


async def test_without_budgets_usage_prints_what_it_always_printed(
        start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path) -> None:
    sidecar = await start_sidecar(**usage_env(tmp_path, store_env))
    env = sidecar.env
    key = await create_key(env, "carol", "user", "acme")
    assert (await chat(sidecar.url, key.key)).status == 200
    await recorded(env, 1)
    variants = (("usage",), ("usage", "--json"), ("usage", "--by", "model,day"),
                ("usage", "--by", "org", "--json"), ("usage", "--owner", "carol"),
                ("usage", "--since", "2000-01-01"))
    for args in variants:
        assert await out(env, *args) == await out(chained(env, WITHOUT_BUDGETS), *args), args
    assert "Budgets" not in await out(env, "usage")
    report = json.loads(await out(env, "usage", "--json", "--sections"))
    assert report == {"usage": json.loads(await out(env, "usage", "--json")), "sections": {}}


async def test_usage_works_without_the_budgets_plugin_in_the_chain(
        start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path) -> None:
    sidecar = await start_sidecar(**usage_env(tmp_path, store_env))
    key = await create_key(sidecar.env, "dave", "user", "acme")
    await set_budget(sidecar.env, "--owner", "dave", "--period", "month", "--limit", "9",
                     "--hard")
    assert (await chat(sidecar.url, key.key)).status == 200
    await recorded(sidecar.env, 1)
    env = chained(sidecar.env, WITHOUT_BUDGETS)
    table = await out(env, "usage")
    assert table.splitlines()[0].split()[:2] == ["owner", "model"]
    assert TITLE not in table and table.splitlines()[-1].startswith("TOTAL")
    report = json.loads(await out(env, "usage", "--json", "--sections"))
    assert report["sections"] == {} and [r["owner_id"] for r in report["usage"]] == ["dave"]
    # Budgets or not, the rows are the same.
    assert report["usage"] == json.loads(await out(sidecar.env, "usage", "--json"))


async def test_sections_come_in_chain_order_from_sync_and_async_implementations(
        tmp_path: Path) -> None:
    env = budget_env(tmp_path, {"SIDECAR_SERVER_DATA_DIR": str(tmp_path / "data")},
                     SIDECAR_PLUGINS_CHAIN=f"{PLUGINS}:later,store,{PLUGINS}:quiet,"
                     f"persistence,{PLUGINS}:echo")
    report = json.loads(await out(env, "usage", "--owner", "erin", "--since", "2030-02-03",
                                  "--json", "--sections"))
    assert list(report["sections"]) == ["later_one", "later_two", "echo"]
    assert report["sections"]["echo"] == {"title": "Echo", "rows": [
        {"owner": "erin", "since": "2030-02-03T00:00:00.000000Z", "dialect": "sqlite"}]}
    assert report["sections"]["later_one"]["rows"][0]["chain"].startswith(PLUGINS)
    text = await out(env, "usage", "--since", "2030-02-03")
    head, rest = text.split("\nLater one\n", 1)
    assert head.splitlines()[-1].startswith("TOTAL")
    assert rest == ('one\n\nLater two\ntwo\n\nEcho\n'
                    '{"owner": null, "since": "2030-02-03T00:00:00.000000Z", '
                    '"dialect": "sqlite"}\n')
    # --json without --sections does not even ask the plugins.
    assert json.loads(await out(env, "usage", "--json")) == []


@pytest.mark.parametrize("args", [("usage",), ("usage", "--json", "--sections")])
async def test_two_plugins_claiming_one_section_name_is_one_line_and_exit_1(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    env = budget_env(tmp_path, {"SIDECAR_SERVER_DATA_DIR": str(tmp_path / "data")},
                     SIDECAR_PLUGINS_CHAIN=f"{CHAIN},persistence,{PLUGINS}:impostor")
    await set_budget(env, "--org", "acme", "--period", "day", "--limit", "1", "--hard")
    result = await run_cli(env, *args)
    assert (result.code, result.out) == (1, "")
    assert result.err == (f"mistral-sidecar: usage: plugins budgets and {PLUGINS}:impostor "
                          "both report a section named 'budgets'\n")
    # Plain --json asks no plugin, so nothing a plugin does can break what scripts read.
    assert json.loads(await out(env, "usage", "--json")) == []
