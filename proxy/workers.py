"""Several worker processes sharing one port (SO_REUSEPORT), supervised by the parent."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType


def run_workers(count: int, serve: Callable[[], int]) -> int:
    """Fork ``count`` workers that each run ``serve()``; return the worst exit code.

    The parent only relays SIGTERM and SIGINT to the workers, which drain on their own, and
    waits for them. A worker that dies early does not take the others down.
    """
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = serve()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)

    def relay(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    codes = []
    for child in children:
        _pid, status = os.waitpid(child, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    failed = [code for code in codes if code != 0]
    # A worker killed by a signal has a negative code: report it as a plain failure.
    return 0 if not failed else max(1, *failed)
