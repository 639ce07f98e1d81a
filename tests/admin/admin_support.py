"""Helpers for the admin API tests: a sidecar with the admin plugin, its JSON log, and plain
HTTP calls (keys come from the real CLI, as an operator makes the first one)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.auth.auth_support import Key, Reply, call, create_key, is_mistral_error

__all__ = ["CHAIN", "MODEL", "Key", "Reply", "admin_env", "assert_error", "audit_lines",
           "call", "create_key", "log_lines"]

#: logs first, so that audit lines land in the test's log file as JSON.
CHAIN = "logs,store,auth,persistence,admin"
MODEL = "mistral-small-latest"


def admin_env(store_env: Mapping[str, str], log: Path, **extra: str) -> dict[str, str]:
    """Environment for a sidecar serving the admin API on ``store_env``, logging JSON to
    ``log``. The key table is re-read only every minute: whatever takes effect sooner does so
    because the admin API made it."""
    env = {"SIDECAR_PLUGINS_CHAIN": CHAIN, "SIDECAR_DB_MIGRATE_ON_START": "true",
           "SIDECAR_AUTH_DB_TIMEOUT_SECONDS": "1", "SIDECAR_AUTH_CACHE_TTL_SECONDS": "60",
           "SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS": "0.02",
           "SIDECAR_LOG_STDOUT": "false", "SIDECAR_LOG_FILE": str(log)}
    env.update(store_env)
    env.update(extra)
    return env


def log_lines(log: Path) -> list[dict[str, Any]]:
    """Every JSON line of the sidecar's log so far."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def audit_lines(log: Path) -> list[dict[str, Any]]:
    """The audit lines of the sidecar's log so far."""
    return [line for line in log_lines(log) if line["logger"] == "mistral_sidecar.audit"]


def assert_error(reply: Reply, status: int, code: str | None = None) -> None:
    """``reply`` is a Mistral-shaped error with ``status`` (and ``code``)."""
    assert reply.status == status, (reply.status, reply.text)
    assert is_mistral_error(reply.body), reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    if code is not None:
        assert reply.body["code"] == code, reply.body

