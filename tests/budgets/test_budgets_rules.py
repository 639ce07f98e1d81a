"""Which budgets apply and what callers see: a soft budget only warns (headers, an event and
a log line at 80 % and 100 %); a budget on one model leaves other models alone (an alias of
its model included); an organisation's budget stops every key of it and no other; a request
whose model has no price is not charged, and that is told once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.auth.auth_support import call
from tests.budgets.budgets_support import (
    CHAIN,
    HI_COST,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    chat,
    create_key,
    post_chat,
    set_budget,
)
from tests.conftest import Sidecar, SidecarFactory
from tests.observability.obs_support import scrape
from tests.support.event_recorder import events

RECORDER = "tests.support.event_recorder"


async def sidecar_with_budgets(start_sidecar: SidecarFactory, tmp_path: Path,
                               redis_env: dict[str, str], **env: str) -> Sidecar:
    await after_midnight_margin()
    settings = {"SIDECAR_PLUGINS_CHAIN": f"{CHAIN},{RECORDER}", **redis_env, **env}
    return await start_sidecar(**budget_env(tmp_path, {}, **settings))


def log_lines(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (tmp_path / "sidecar.log").read_text().splitlines()]
    return [line for line in lines if line.get("event") == event]


async def test_a_soft_budget_only_warns_with_headers_an_event_and_a_log_line(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await sidecar_with_budgets(start_sidecar, tmp_path, redis_env,
                                         SIDECAR_PLUGINS_CHAIN=f"{CHAIN},metrics,{RECORDER}")
    key = await create_key(sidecar.env, "alice", "user", "acme")
    # 10 USD: the third chat (9 USD) crosses 80 %, the fourth (12 USD) 100 %.
    await set_budget(sidecar.env, "--owner", "alice", "--org", "acme", "--period", "month",
                     "--limit", "10", "--soft")
    await budgets_in_force(sidecar.url, 1)

    seen = []
    for _ in range(6):
        answer = await post_chat(sidecar.url, key.key)
        assert answer.status == 200
        seen.append((answer.headers["X-Sidecar-Budget-Limit"],
                     answer.headers["X-Sidecar-Budget-Remaining"],
                     answer.headers.get("X-Sidecar-Budget-Warning")))
    warning = "of the monthly soft budget of 10 USD for owner alice (org acme) used"
    assert seen == [("10", "10", None), ("10", "7", None), ("10", "4", None),
                    ("10", "1", f"90% {warning}"), ("10", "0", f"100% {warning}"),
                    ("10", "0", f"100% {warning}")]
    assert int(answer.headers["X-Sidecar-Budget-Reset"]) > 0

    crossed = events(sidecar.app, "budgets.threshold")
    assert [(e["percent"], e["spent"], e["limit"], e["hard"], e["period"], e["scope"])
            for e in crossed] == [(80, "9", "10", False, "month", "owner"),
                                  (100, "12", "10", False, "month", "owner")]
    lines = log_lines(tmp_path, "budgets.threshold")
    assert [(line["level"], line["percent"]) for line in lines] == [
        ("WARNING", 80), ("WARNING", 100)]
    assert events(sidecar.app, "budgets.exceeded") == []
    metrics = await scrape(sidecar.url)
    for percent in ("80", "100"):
        assert metrics.value("mistral_sidecar_budget_thresholds_total", scope="owner",
                             period="month", percent=percent, mode="soft") == 1
    assert metrics.value("mistral_sidecar_budgets_defined") == 1
    assert metrics.value("mistral_sidecar_budgets_fallback_active") == 0


async def test_an_answer_from_the_cache_costs_nothing(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await sidecar_with_budgets(
        start_sidecar, tmp_path, redis_env, SIDECAR_CACHE_ENABLED="true",
        SIDECAR_PLUGINS_CHAIN=f"{CHAIN},cache,{RECORDER}")
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--key", key.key_id, "--period", "day",
                     "--limit", str(2 * HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)
    remaining = []
    for _ in range(4):
        answer = await call(sidecar.url, "POST", "/v1/chat/completions", key.key, json={
            "model": "meter-a", "temperature": 0,
            "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status == 200
        remaining.append((answer.headers["X-Sidecar-Cache"],
                          answer.headers["X-Sidecar-Budget-Remaining"]))
    # Only the answer upstream gave was charged.
    assert remaining == [("miss", "6"), ("hit", "3"), ("hit", "3"), ("hit", "3")]


async def test_a_budget_on_one_model_leaves_other_models_alone(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await sidecar_with_budgets(start_sidecar, tmp_path, redis_env)
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--key", key.key_id, "--model", "meter-a",
                     "--period", "day", "--limit", str(HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)

    assert (await chat(sidecar.url, key.key, model="meter-a")).status == 200
    refused = await chat(sidecar.url, key.key, model="meter-a")
    assert (refused.status, refused.body["code"]) == (429, "budget_exceeded")
    assert "on meter-a" in refused.body["message"]
    # Another name of the same model, as the price table says: the same budget.
    assert (await chat(sidecar.url, key.key, model="meter-latest")).status == 429
    # Another model: no budget applies, no budget headers.
    for _ in range(3):
        other = await post_chat(sidecar.url, key.key, model="meter-b")
        assert other.status == 200
        assert "X-Sidecar-Budget-Limit" not in other.headers


async def test_an_org_budget_stops_every_key_of_the_org_and_no_other(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await sidecar_with_budgets(start_sidecar, tmp_path, redis_env)
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    bob = await create_key(sidecar.env, "bob", "user", "acme")
    carol = await create_key(sidecar.env, "carol", "user", "beta")
    # Also an owner budget for "bob" in another organisation: not acme's bob.
    await set_budget(sidecar.env, "--org", "acme", "--period", "day",
                     "--limit", str(2 * HI_COST), "--hard")
    await set_budget(sidecar.env, "--owner", "bob", "--org", "beta", "--period", "day",
                     "--limit", "0.000001", "--hard")
    await budgets_in_force(sidecar.url, 2)

    assert (await chat(sidecar.url, alice.key)).status == 200
    assert (await chat(sidecar.url, bob.key, stream=True)).status == 200
    for key in (alice, bob):
        for stream in (False, True):
            refused = await chat(sidecar.url, key.key, stream=stream)
            assert (refused.status, refused.body["code"]) == (429, "budget_exceeded")
            assert "for organisation acme" in refused.body["message"]
    for _ in range(3):
        assert (await chat(sidecar.url, carol.key)).status == 200
    assert [(e["scope"], e["period"]) for e in events(sidecar.app, "budgets.exceeded")] == [
        ("org", "day")] * 4


async def test_an_owner_budget_without_org_applies_to_that_name_in_every_org(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await sidecar_with_budgets(start_sidecar, tmp_path, redis_env)
    acme = await create_key(sidecar.env, "dana", "user", "acme")
    beta = await create_key(sidecar.env, "dana", "user", "beta")
    await set_budget(sidecar.env, "--owner", "dana", "--period", "day",
                     "--limit", str(HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)
    assert (await chat(sidecar.url, acme.key)).status == 200
    assert (await chat(sidecar.url, beta.key)).status == 429


async def test_a_request_without_a_price_is_not_charged_and_that_is_told_once(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    # Where the operator lets unpriced models through hard budgets (by default they are
    # refused: tests/security/test_security_budget_evasion.py).
    sidecar = await sidecar_with_budgets(start_sidecar, tmp_path, redis_env,
                                         SIDECAR_BUDGETS_UNPRICED_MODELS="allow")
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--key", key.key_id, "--period", "day",
                     "--limit", str(HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)
    for _ in range(3):
        answer = await post_chat(sidecar.url, key.key, model="ghost-model")
        assert answer.status == 200
        assert answer.headers["X-Sidecar-Budget-Remaining"] == str(HI_COST)
    assert events(sidecar.app, "budgets.uncharged") == [
        {"model": "ghost-model", "reason": "unpriced"}]
    # A free model costs nothing: charged nothing, told nothing.
    assert (await post_chat(sidecar.url, key.key, model="free-model")).status == 200
    assert len(events(sidecar.app, "budgets.uncharged")) == 1
    assert (await chat(sidecar.url, key.key)).status == 200
    assert (await chat(sidecar.url, key.key)).status == 429
