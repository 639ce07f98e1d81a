"""The background task that takes each interval's batch and hands it to the sinks.

Nothing here runs on the request path: requests only add to the aggregate. Every
``interval`` seconds the task takes the batch and sends it to each sink in a thread of its
own (a slow receiver holds that thread, never the event loop nor the loop's default
executor). Sends are sequential, so a slow receiver delays the next batch instead of piling
requests up; a batch a sink could not take is dropped and reported once (``report``), the
next interval tries again with fresh data. On shutdown the last partial interval is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from plugins.metrics_push.aggregate import Aggregate, Batch

__all__ = ["Pusher", "Sink"]

logger = logging.getLogger("mistral_sidecar.metrics_push")


class Sink(Protocol):
    """Where batches go (Datadog, CloudWatch EMF lines)."""

    #: Short name, for reports (``datadog``, ``cloudwatch``).
    name: str

    def send(self, batch: Batch) -> None:
        """Deliver ``batch`` (called in the pusher's thread); raise when it was not."""

    def close(self) -> None:
        """Release what the sink holds (called in the pusher's thread, last)."""


#: ``report(sink, error, series)``: a sink failed to take a batch of ``series`` series.
FailureReport = Callable[[str, str, int], None]
#: ``overflow(points)``: points an interval dropped because it held too many series.
OverflowReport = Callable[[int], None]


class Pusher:
    """Sends the aggregate's batches to the sinks every ``interval`` seconds."""

    def __init__(self, aggregate: Aggregate, sinks: list[Sink], interval: float, *,
                 failed: FailureReport, overflow: OverflowReport) -> None:
        """``failed`` and ``overflow`` are told (on the event loop) of what was lost."""
        self.aggregate = aggregate
        self.sinks = sinks
        self.interval = interval
        self._failed = failed
        self._overflow = overflow
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="metrics-push")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the periodic task (on the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="metrics-push")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # never let one bad batch end the task
                logger.exception("metrics push failed")

    async def flush(self) -> None:
        """Take the current batch and send it to every sink."""
        batch = self.aggregate.take(time.time())
        if batch.dropped:
            self._overflow(batch.dropped)
        if not batch.series:
            return
        loop = asyncio.get_running_loop()
        for sink in self.sinks:
            try:
                await loop.run_in_executor(self._executor, sink.send, batch)
            except Exception as error:
                self._failed(sink.name, f"{type(error).__name__}: {error}"[:300],
                             len(batch.series))

    async def stop(self, grace: float) -> None:
        """Stop the task and send the last batch, waiting at most ``grace`` seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(self.flush(), grace)
        except TimeoutError:
            logger.warning("metrics push: the last batch was not sent within %.1f s", grace)
        loop = asyncio.get_running_loop()
        for sink in self.sinks:
            try:
                await asyncio.wait_for(loop.run_in_executor(self._executor, sink.close), 2.0)
            except Exception:
                logger.warning("metrics push: closing %s failed", sink.name, exc_info=True)
        # A send still running in the thread ends by its own timeout.
        self._executor.shutdown(wait=False)
