"""mistral-sidecar: a hardening reverse proxy for the Mistral API.

Plugins mark their hook implementations with :data:`hookimpl`::

    from proxy import hookimpl

    @hookimpl
    def on_request(ctx):
        ...
"""

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "mistral_sidecar"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for hook implementations in plugins."""


class StopObserving:
    """The type of :data:`STOP_OBSERVING` (one instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "proxy.STOP_OBSERVING"


STOP_OBSERVING = StopObserving()
"""What an ``on_stream_event`` implementation returns once it needs no more events of the
stream at hand: the core stops calling it for that response (other streams still reach it)."""

__all__ = ["PROJECT_NAME", "STOP_OBSERVING", "StopObserving", "__version__", "hookimpl"]
