"""What a budget is, and which budgets apply to a caller and a model.

A budget caps what one subject may spend per period: a sidecar key, an owner (in one
organisation, or under that name in every organisation) or a whole organisation; on every
model or on one. A hard budget refuses requests once its spend reached the limit; a soft one
only warns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from plugins.budgets.money import format_amount
from proxy.context import Identity

__all__ = ["KEY", "ORG", "OWNER", "SCOPES", "Budget", "BudgetIndex"]

KEY = "key"
OWNER = "owner"
ORG = "org"
SCOPES = (KEY, OWNER, ORG)


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget, as the ``budgets`` table holds it.

    ``subject`` is the key id, owner or organisation the ``scope`` names; ``owner_org`` the
    organisation of an owner budget (``""``: that owner name in any organisation, and for
    the other scopes). ``model`` is ``""`` for every model. ``limit`` is in nanos of
    ``currency``.
    """

    id: str
    scope: str
    subject: str
    owner_org: str
    model: str
    period: str
    limit: int
    currency: str
    hard: bool
    created_at: float

    def describe(self) -> str:
        """Whose budget this is, for messages: ``owner alice (org acme)``, ``key k1``,
        ``org acme``."""
        who = f"{self.scope} {self.subject}"
        if self.scope == OWNER and self.owner_org:
            who += f" (org {self.owner_org})"
        return who

    def describe_limit(self) -> str:
        """``9 USD``."""
        return f"{format_amount(self.limit)} {self.currency}"

    @property
    def mode(self) -> str:
        """``hard`` or ``soft``."""
        return "hard" if self.hard else "soft"


class BudgetIndex:
    """Every budget in force, indexed by whom it applies to.

    ``canonical`` maps a model name to the one name the price table knows it by (its alias
    target), so that a budget set on ``mistral-large-latest`` applies to an answer naming
    ``mistral-large-2411`` when the table says they are one model.
    """

    def __init__(self, budgets: Iterable[Budget],
                 canonical: Callable[[str], str] = lambda model: model) -> None:
        self.budgets = tuple(budgets)
        self.canonical = canonical
        self._by_subject: dict[tuple[str, str, str], list[tuple[Budget, str]]] = {}
        for budget in self.budgets:
            model = canonical(budget.model) if budget.model else ""
            self._by_subject.setdefault(
                (budget.scope, budget.subject, budget.owner_org), []).append((budget, model))

    def __len__(self) -> int:
        return len(self.budgets)

    def candidates(self, identity: Identity) -> list[tuple[Budget, str]]:
        """The budgets of ``identity``'s key, owner and organisation, each with its model's
        canonical name (``""``: every model), whatever model a request names."""
        found: list[tuple[Budget, str]] = []
        by_subject = self._by_subject
        for subject in ((KEY, identity.key_id, ""), (OWNER, identity.owner, ""),
                        (OWNER, identity.owner, identity.org), (ORG, identity.org, "")):
            found.extend(by_subject.get(subject, ()))
        return found

    def select(self, candidates: list[tuple[Budget, str]], model: str | None) -> list[Budget]:
        """Of ``candidates``, the budgets that apply to a request for ``model`` (``None``
        when it names none: only budgets on every model apply)."""
        wanted = self.canonical(model) if model else None
        return [budget for budget, budget_model in candidates
                if not budget_model or budget_model == wanted]

    def applying(self, identity: Identity, model: str | None) -> list[Budget]:
        """The budgets that apply to ``identity`` calling ``model``."""
        return self.select(self.candidates(identity), model)
