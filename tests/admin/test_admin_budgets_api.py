"""``/admin/v1/budgets``: an organisation's admin sees its own budgets and their spend, never
another organisation's."""

from __future__ import annotations

from pathlib import Path

from tests.admin.admin_support import assert_error
from tests.auth.auth_support import call, create_key
from tests.budgets.budgets_support import (
    CHAIN,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    post_chat,
    set_budget,
)
from tests.conftest import SidecarFactory
from tests.console.console_support import ConsoleClient

BUDGETS = "/admin/v1/budgets"


async def test_an_org_admin_sees_its_budgets_and_their_spend_only(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    await after_midnight_margin()
    sidecar = await start_sidecar(**budget_env(
        tmp_path, {}, SIDECAR_PLUGINS_CHAIN=f"{CHAIN},persistence,admin,console", **redis_env))
    env, url = sidecar.env, sidecar.url
    acme_admin = await create_key(env, "root", "admin", "acme")
    alice = await create_key(env, "alice", "user", "acme")
    globex_admin = await create_key(env, "gail", "admin", "globex")
    gus = await create_key(env, "gus", "user", "globex")
    await set_budget(env, "--org", "acme", "--period", "day", "--limit", "100", "--hard")
    await set_budget(env, "--owner", "alice", "--org", "acme", "--period", "month",
                     "--limit", "10", "--soft")
    await set_budget(env, "--key", gus.key_id, "--period", "day", "--limit", "5", "--hard")
    # An owner name in every organisation is the operator's, not one organisation's.
    await set_budget(env, "--owner", "alice", "--period", "day", "--limit", "7", "--hard")
    await budgets_in_force(url, 4)
    assert (await post_chat(url, alice.key)).status == 200  # 3 USD

    seen = await call(url, "GET", BUDGETS, acme_admin.key)
    assert seen.status == 200, seen.text
    rows = {(row["scope"], row["subject"]): row for row in seen.body["data"]}
    assert set(rows) == {("org", "acme"), ("owner", "alice")}
    assert rows[("org", "acme")] | {"limit": "100", "spent": "3", "mode": "hard",
                                    "period": "day", "currency": "USD"} == rows[("org", "acme")]
    assert rows[("owner", "alice")]["spent"] == "3"

    theirs = await call(url, "GET", BUDGETS, globex_admin.key)
    assert [(row["scope"], row["subject"], row["spent"]) for row in theirs.body["data"]] == [
        ("key", gus.key_id, "0")]
    assert_error(await call(url, "GET", BUDGETS, alice.key), 403)
    assert_error(await call(url, "GET", BUDGETS, None), 401)
    assert_error(await call(url, "GET", BUDGETS, acme_admin.key, params={"org": "globex"}),
                 400)

    # The console's usage page shows the same budgets.
    browser = ConsoleClient(url)
    try:
        await browser.login(acme_admin.key)
        page = await browser.get("/admin/usage")
    finally:
        await browser.close()
    assert page.status == 200 and "Budgets this period" in page.text
    assert "org acme" in page.text and "owner alice" in page.text
    assert gus.key_id not in page.text
