"""Which limits apply to a caller: the defaults, overridden per role and then per key.

The ``ratelimit.overrides`` setting (YAML, or JSON in ``SIDECAR_RATELIMIT_OVERRIDES``)::

    ratelimit:
      overrides:
        roles:
          admin: {requests: 600, window: 60, tokens_per_minute: 0}
        keys:
          key_batch_jobs: {tokens_per_minute: 2000000}

Each entry may set any of ``requests`` (0 = unlimited), ``window`` (seconds) and
``tokens_per_minute`` (0 = unlimited); what it leaves out comes from the role's entry, then
from the defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.context import Identity

FIELDS = {"requests": 0, "window": 1, "tokens_per_minute": 0}
#: Units per second beyond which the limiter's microsecond arithmetic loses precision.
MAX_RATE_PER_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class Policy:
    """The limits for one request; ``scope`` says where they came from (a bounded label)."""

    requests: int
    window: int
    tokens_per_minute: int
    scope: str = "default"


def check_overrides(value: Any) -> str | None:
    """Validate the shape of ``ratelimit.overrides``; an error message or ``None``."""
    if not isinstance(value, Mapping):
        return "must be a mapping with 'roles' and/or 'keys'"
    for section in value:
        if section not in ("roles", "keys"):
            return f"unknown section {section!r} (expected 'roles' or 'keys')"
        entries = value[section]
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            return f"{section} must map names to limits"
        for name, entry in entries.items():
            if not isinstance(entry, Mapping):
                return f"{section}.{name} must be a mapping"
            for field, raw in entry.items():
                if field not in FIELDS:
                    return (f"{section}.{name}: unknown field {field!r} "
                            f"(expected one of {', '.join(FIELDS)})")
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < FIELDS[field]:
                    return f"{section}.{name}.{field} must be an integer >= {FIELDS[field]}"
    return None


class PolicyTable:
    """Resolves the :class:`Policy` for a caller from defaults and overrides."""

    def __init__(self, default: Policy, overrides: Mapping[str, Any] | None = None) -> None:
        overrides = overrides or {}
        self.default = default
        self.roles = {
            str(role): _merge(default, entry, "role")
            for role, entry in (overrides.get("roles") or {}).items()
        }
        self.keys: dict[str, Mapping[str, int]] = {
            str(key): entry for key, entry in (overrides.get("keys") or {}).items()
        }

    def problems(self) -> list[str]:
        """Policies whose rate is too high to count exactly, one line each."""
        found = []
        named = [("default", self.default)]
        named += [(f"roles.{role}", policy) for role, policy in self.roles.items()]
        named += [(f"keys.{key}", _merge(self.default, entry, "key"))
                  for key, entry in self.keys.items()]
        for name, policy in named:
            if policy.requests / policy.window > MAX_RATE_PER_SECOND:
                found.append(f"{name}: {policy.requests} requests per {policy.window} s is "
                             f"more than {MAX_RATE_PER_SECOND} per second")
            if policy.tokens_per_minute / 60 > MAX_RATE_PER_SECOND:
                found.append(f"{name}: {policy.tokens_per_minute} tokens per minute is more "
                             f"than {MAX_RATE_PER_SECOND} per second")
        return found

    def for_identity(self, identity: Identity | None) -> Policy:
        """The policy for ``identity`` (``None``: an unauthenticated caller gets the default)."""
        if identity is None:
            return self.default
        base = self.roles.get(identity.role, self.default)
        entry = self.keys.get(identity.key_id)
        return base if entry is None else _merge(base, entry, "key")


def _merge(base: Policy, entry: Mapping[str, int], scope: str) -> Policy:
    values = {field: int(entry[field]) for field in FIELDS if field in entry}
    return dataclasses.replace(base, scope=scope, **values)
