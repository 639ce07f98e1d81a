"""``/admin/v1/budgets``: the budgets that apply within the caller's organisation, with what
each spent in its current period, when the budgets plugin is in the chain.

An organisation's budgets are those on the organisation itself, on its owners
(``budgets set --owner O --org G``) and on its keys. A budget on an owner name in every
organisation (``--owner O`` alone) belongs to the operator, not to one organisation, and is
not listed.
"""

from __future__ import annotations

from aiohttp import web

from plugins.admin.plumbing import AdminRequest, answer, query
from plugins.auth.keystore import KeyStore
from plugins.budgets import BUDGETS
from plugins.budgets.budget import KEY, ORG, OWNER, Budget
from plugins.budgets.commands import budget_row
from plugins.budgets.enforce import counter
from plugins.budgets.ledger import LedgerUnavailable
from plugins.budgets.periods import utc_now


async def _in_org(admin: AdminRequest, budget: Budget) -> bool:
    org = admin.caller.org
    if budget.scope == ORG:
        return budget.subject == org
    if budget.scope == OWNER:
        return budget.owner_org == org
    if budget.scope == KEY:
        record = await admin.run(KeyStore(admin.db).get(budget.subject))
        return record is not None and record.org == org
    return False


async def list_budgets(admin: AdminRequest) -> web.Response:
    """``GET /admin/v1/budgets``: the organisation's budgets and their spend this period
    (``spent`` is ``null`` while the spend backend cannot tell; an empty list without the
    budgets plugin)."""
    query(admin.request, ())
    state = admin.request.app.get(BUDGETS)
    mine = [] if state is None else [budget for budget in state.book.index.budgets
                                     if await _in_org(admin, budget)]
    spent: list[int | None] = [None] * len(mine)
    if state is not None and mine:
        now = utc_now()
        try:
            spent = list(await state.ledger.read([counter(budget, now)[0] for budget in mine]))
        except LedgerUnavailable:
            pass
    return answer({"object": "list",
                   "data": [budget_row(budget, amount)
                            for budget, amount in zip(mine, spent, strict=True)]})
