"""Application factory and blocking runner of the mock upstream."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from . import (
    api_agents,
    api_batch,
    api_completions,
    api_conversations,
    api_embeddings,
    api_files,
    api_models,
    api_moderations,
    control,
)
from .config import MockConfig
from .middleware import MIDDLEWARES, add_api_headers
from .state import STATE_KEY, MockState

_MAX_JSON_BODY = 64 * 1024 * 1024


async def _upload_dir(app: web.Application) -> AsyncIterator[None]:
    """Own a temporary directory for uploads for the lifetime of the app."""
    state = app[STATE_KEY]
    state.upload_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="mistral-mock-"))
    yield
    await asyncio.to_thread(shutil.rmtree, state.upload_dir, True)
    state.upload_dir = None
    state.files.clear()


async def _release_waiters(app: web.Application) -> None:
    """Let stalled handlers give up so shutdown does not wait for them."""
    app[STATE_KEY].closing.set()


def create_mock_app(config: MockConfig | None = None) -> web.Application:
    """Build a fresh mock Mistral API application with its own in-memory state."""
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=_MAX_JSON_BODY)
    app[STATE_KEY] = MockState.from_config(config or MockConfig())
    for module in (
        control,
        api_models,
        api_completions,
        api_embeddings,
        api_agents,
        api_conversations,
        api_files,
        api_batch,
        api_moderations,
    ):
        app.add_routes(module.routes)
    app.cleanup_ctx.append(_upload_dir)
    app.on_shutdown.append(_release_waiters)
    app.on_response_prepare.append(add_api_headers)
    return app


def run_mock(host: str, port: int, config: MockConfig) -> None:
    """Serve the mock on ``host:port`` until interrupted (access log off)."""
    web.run_app(
        create_mock_app(config),
        host=host,
        port=port,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
