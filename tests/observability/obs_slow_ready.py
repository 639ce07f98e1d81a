"""A test plugin whose readiness check never answers (a hung dependency).

Enable with ``SIDECAR_PLUGINS_CHAIN="...,tests.observability.obs_slow_ready"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from proxy import hookimpl


@hookimpl
def readiness(app: web.Application) -> Any:
    """Hang far longer than any scrape may wait."""

    async def hang() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"hung": {"ok": True}}

    return hang()
