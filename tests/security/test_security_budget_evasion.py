"""A hard budget cannot be walked around by naming a model it cannot price or see.

Two ways a caller kept spending past a hard cap: a model the price table does not know (a
new release, a dated name the table lacks) costs nothing that can be charged, and an agent
call names no model, so a budget on the agent's model was never checked before it. Both now
fail closed for callers a hard budget applies to; everyone else is left alone (refusing every
caller over one unpriced model is the opposite failure, seen in other gateways).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.auth.auth_support import call
from tests.budgets.budgets_support import (
    CHAIN,
    HI_COST,
    after_midnight_margin,
    budget_env,
    budgets_in_force,
    create_key,
    post_chat,
    set_budget,
)
from tests.conftest import MockUpstream, Sidecar, SidecarFactory


async def budgeted_sidecar(start_sidecar: SidecarFactory, tmp_path: Path,
                           redis_env: dict[str, str], **env: str) -> Sidecar:
    await after_midnight_margin()
    return await start_sidecar(**budget_env(tmp_path, {}, SIDECAR_PLUGINS_CHAIN=CHAIN,
                                            **redis_env, **env))


async def test_a_model_without_a_price_is_refused_to_a_caller_under_a_hard_budget(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await budgeted_sidecar(start_sidecar, tmp_path, redis_env)
    capped = await create_key(sidecar.env, "alice", "user", "acme")
    warned = await create_key(sidecar.env, "bob", "user", "acme")
    free = await create_key(sidecar.env, "carol", "user", "acme")
    await set_budget(sidecar.env, "--key", capped.key_id, "--period", "day",
                     "--limit", str(HI_COST), "--hard")
    await set_budget(sidecar.env, "--key", warned.key_id, "--period", "day",
                     "--limit", str(HI_COST), "--soft")
    await budgets_in_force(sidecar.url, 2)

    # Before: three chats of a model the table does not know went through uncharged, and
    # the cap of one chat never stopped them.
    refused = await post_chat(sidecar.url, capped.key, model="ghost-model")
    assert refused.status == 403
    assert refused.body["object"] == "error"
    assert refused.body["code"] == "model_unpriced"
    assert "ghost-model" in refused.body["message"]
    # A priced model still works, and the cap still counts it.
    assert (await post_chat(sidecar.url, capped.key)).status == 200
    assert (await post_chat(sidecar.url, capped.key)).status == 429

    # A soft budget only warns, and a caller without a budget is not affected at all.
    assert (await post_chat(sidecar.url, warned.key, model="ghost-model")).status == 200
    assert (await post_chat(sidecar.url, free.key, model="ghost-model")).status == 200


async def test_an_operator_may_let_unpriced_models_through_a_hard_budget(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await budgeted_sidecar(start_sidecar, tmp_path, redis_env,
                                     SIDECAR_BUDGETS_UNPRICED_MODELS="allow")
    key = await create_key(sidecar.env, "alice", "user", "acme")
    await set_budget(sidecar.env, "--key", key.key_id, "--period", "day",
                     "--limit", str(HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)
    for _ in range(2):
        assert (await post_chat(sidecar.url, key.key, model="ghost-model")).status == 200


async def test_an_agent_call_cannot_outrun_a_hard_budget_on_its_agents_model(
        start_sidecar: SidecarFactory, tmp_path: Path, redis_env: dict[str, str]) -> None:
    sidecar = await budgeted_sidecar(start_sidecar, tmp_path, redis_env)
    # An admin key: it may create the agent it then calls.
    key = await create_key(sidecar.env, "alice", "admin", "acme")
    # One agent call of "hi" costs what a chat does: the cap allows exactly one.
    await set_budget(sidecar.env, "--key", key.key_id, "--model", "meter-a", "--period",
                     "day", "--limit", str(HI_COST), "--hard")
    await budgets_in_force(sidecar.url, 1)
    agent = await call(sidecar.url, "POST", "/v1/agents", key.key,
                       json={"model": "meter-a", "name": "helper"})
    assert agent.status == 200, agent.body
    ask = {"agent_id": agent.body["id"], "messages": [{"role": "user", "content": "hi"}]}

    first = await call(sidecar.url, "POST", "/v1/agents/completions", key.key, json=ask)
    assert first.status == 200, first.body
    # Before: the request named no model, so the budget on meter-a was never checked and
    # every further agent call went upstream.
    second = await call(sidecar.url, "POST", "/v1/agents/completions", key.key, json=ask)
    assert second.status == 429, second.body
    assert second.body["code"] == "budget_exceeded"
    # Other models' chats are not this budget's business.
    assert (await post_chat(sidecar.url, key.key, model="meter-b")).status == 200


async def test_concurrent_agent_calls_cannot_overshoot_a_hard_budget(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path,
        redis_env: dict[str, str]) -> None:
    """An agent call names no model, so it cannot hold its own model's price: it holds at
    the dearest prices of the table instead, and requests sent together still stop at the
    cap."""
    from tests.budgets.test_budgets_concurrency import concurrency_env

    await after_midnight_margin()
    sidecar = await start_sidecar(**concurrency_env(tmp_path, {}, **redis_env))
    key = await create_key(sidecar.env, "alice", "admin", "acme")
    agent = await call(sidecar.url, "POST", "/v1/agents", key.key,
                       json={"model": "meter-a", "name": "helper"})
    assert agent.status == 200, agent.body
    # About seven agent calls of "hi" (2.001 USD each) fit.
    await set_budget(sidecar.env, "--key", key.key_id, "--period", "day", "--limit", "15",
                     "--hard")
    await budgets_in_force(sidecar.url, 1)
    await mock_upstream.settings(latency_ms=1500)

    ask = {"agent_id": agent.body["id"], "messages": [{"role": "user", "content": "hi"}]}
    replies = await asyncio.gather(*(
        call(sidecar.url, "POST", "/v1/agents/completions", key.key, json=ask)
        for _ in range(40)))
    served = sum(1 for reply in replies if reply.status == 200)
    # Before: all 40 went upstream, 80 USD against a 15 USD cap.
    assert 1 <= served <= 8, [reply.status for reply in replies]
    assert {reply.status for reply in replies} <= {200, 429}
    upstream = [r for r in await mock_upstream.requests()
                if r["path"] == "/v1/agents/completions"]
    assert len(upstream) == served
