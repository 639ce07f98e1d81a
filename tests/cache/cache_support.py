"""Helpers for the cache tests: a sidecar with the cache after auth, keys, raw calls."""

from __future__ import annotations

from typing import Any

from tests.auth.auth_support import Key, Reply, auth_env, call, create_key
from tests.conftest import MockUpstream, Sidecar, SidecarFactory

__all__ = ["CHAT", "Key", "Reply", "chat", "create_key", "start_cached", "upstream_calls"]

CHAT_PATH = "/v1/chat/completions"
#: A deterministic chat request (temperature 0).
CHAT: dict[str, Any] = {"model": "mistral-small-latest", "temperature": 0,
                        "messages": [{"role": "user", "content": "what is a cache"}]}


async def start_cached(start_sidecar: SidecarFactory, chain: str = "store,auth,cache",
                       **env: str) -> Sidecar:
    """A sidecar on the embedded store with ``chain`` and the cache enabled."""
    return await start_sidecar(**auth_env({}, SIDECAR_PLUGINS_CHAIN=chain,
                                          SIDECAR_CACHE_ENABLED="true", **env))


async def chat(sidecar: Sidecar, key: Key, body: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None, path: str = CHAT_PATH) -> Reply:
    """One raw chat completion (or ``path``) call with ``key``."""
    return await call(sidecar.url, "POST", path, key.key, json=body or CHAT, headers=headers)


async def upstream_calls(mock: MockUpstream, path: str = CHAT_PATH) -> int:
    """How many requests for ``path`` reached the mock upstream."""
    return sum(1 for request in await mock.requests() if request["path"] == path)
