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

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
