"""Running an application until SIGTERM/SIGINT, then draining gracefully."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.door import DoorConfig, DoorRunner

logger = logging.getLogger("mistral_sidecar.server")


async def serve_until_signal(
    app: web.Application,
    host: str,
    port: int,
    grace_seconds: float,
    *,
    on_ready: Callable[[int], Awaitable[None] | None] | None = None,
    reuse_port: bool = False,
    gc_threshold: int = 0,
    door: DoorConfig | None = None,
    ops_port: int = 0,
) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM or SIGINT.

    On the signal the listening sockets close at once, in-flight requests and streams get
    ``grace_seconds`` to finish, then plugins shut down (flushing what they hold) and the
    coroutine returns, so the process exits 0. ``gc_threshold`` (when above 0) becomes the
    collector's youngest-generation threshold once start-up is done. Connections go through
    the door (:mod:`proxy.door`) configured by ``door``. ``ops_port`` (when above 0) is a
    second listening port on ``host`` for the same application (the operational endpoints
    tell the two apart by the port a request arrived on).
    """
    runner = DoorRunner(app, door, shutdown_timeout=grace_seconds)
    await runner.setup()
    # Everything built at start-up (plugins, tables, compiled patterns) lives as long as the
    # process: keep it out of the collector's generations so full collections stay cheap.
    gc.collect()
    gc.freeze()
    if gc_threshold > 0:
        # Reference counting frees nearly everything a request allocates; the collector is
        # only for cycles. At Python's default (700) it runs every few requests and each pass
        # walks every in-flight request's objects: about 3 % of the CPU of a busy sidecar.
        gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port, backlog=2048, reuse_port=reuse_port)
        await site.start()
        bound = _bound_port(runner) or port
        logger.info("listening", extra={"host": host, "port": bound})
        if ops_port > 0:
            await web.TCPSite(runner, host, ops_port, reuse_port=reuse_port).start()
            logger.info("listening for operations", extra={"host": host, "port": ops_port})
        if on_ready is not None:
            result = on_ready(bound)
            if result is not None:
                await result
        await stop.wait()
        logger.info("draining", extra={"grace_seconds": grace_seconds})
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        # The last line: once plugins have shut down, the logs plugin's handlers are gone.
        logger.info("stopping: plugins shut down and flush what they hold")
        await runner.cleanup()


def _bound_port(runner: web.BaseRunner) -> int | None:
    """The port of the runner's first IP listening socket (the main site's, when it is the
    only one started so far)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
