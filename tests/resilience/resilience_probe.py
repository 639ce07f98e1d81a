"""A test-only plugin for the resilience tests: records events, and imitates an authentication
plugin in pass-through mode (the caller's own key goes upstream).

Load it with ``SIDECAR_PLUGINS_CHAIN="retry,breaker,keypool,tests.resilience.resilience_probe"``.
"""

from __future__ import annotations

from proxy import hookimpl
from proxy.context import RequestContext
from tests.support.event_recorder import EVENTS, events, on_event, startup

__all__ = ["EVENTS", "PASSTHROUGH_HEADER", "events", "on_event", "on_request", "startup"]

#: A request carrying this header has its value sent upstream as the API key.
PASSTHROUGH_HEADER = "X-Test-Upstream-Key"


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Put the caller's key in place of the configured one, as pass-through auth does."""
    own = ctx.request.headers.get(PASSTHROUGH_HEADER)
    if own:
        ctx.upstream_api_key = own

