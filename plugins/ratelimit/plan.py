"""A caller's limits under its policy, built once and reused for each of its requests."""

from __future__ import annotations

from dataclasses import dataclass

from plugins.ratelimit.gcra import Limit
from plugins.ratelimit.headers import policy_header
from plugins.ratelimit.policy import Policy

#: Policy names in the ``RateLimit`` headers.
REQUESTS, TOKENS = "default", "tokens"
TOKEN_WINDOW = 60


@dataclass(frozen=True, slots=True)
class Plan:
    """The limits one request of ``caller`` is checked against, with their header names.

    The request limit takes one unit per request; the token limit checks that the budget is
    not empty (each request then takes its prompt's estimated tokens, and the rest once the
    response reports its usage).
    """

    policy: Policy
    names: tuple[str, ...]
    limits: tuple[Limit, ...]
    token_limit: Limit | None
    policy_header: str


def make_plan(caller: str, policy: Policy) -> Plan:
    """The plan for ``caller`` under ``policy``; its keys share a Redis Cluster hash tag."""
    bucket = "{" + caller + "}"
    names: list[str] = []
    limits: list[Limit] = []
    if policy.requests > 0:
        names.append(REQUESTS)
        limits.append(Limit(f"rl:{bucket}:req", policy.requests, policy.window))
    token_limit = None
    if policy.tokens_per_minute > 0:
        token_limit = Limit(f"rl:{bucket}:tok", policy.tokens_per_minute, TOKEN_WINDOW,
                            check=1, consume=0)
        names.append(TOKENS)
        limits.append(token_limit)
    return Plan(policy, tuple(names), tuple(limits), token_limit,
                policy_header(names, limits))


class PlanCache:
    """Recently used plans, at most ``size`` of them (emptied when full: rebuilding is cheap)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._plans: dict[tuple[str, int, int, int, str], Plan] = {}

    def get(self, caller: str, policy: Policy) -> Plan:
        """The plan for ``caller`` under ``policy``."""
        # Plain values, not the Policy: a frozen dataclass hashes in Python, on every request.
        key = (caller, policy.requests, policy.window, policy.tokens_per_minute, policy.scope)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= self.size:
                self._plans.clear()
            plan = self._plans[key] = make_plan(caller, policy)
        return plan
