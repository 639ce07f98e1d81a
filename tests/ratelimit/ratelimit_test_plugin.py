"""A stand-in for an authentication plugin and an event observer, for the rate-limit tests.

``X-Test-Key-Id`` / ``X-Test-Role`` request headers become ``ctx.identity`` (what the auth
plugin does from a real key); every event emitted is recorded on the app under ``EVENTS``.
Enable with ``SIDECAR_PLUGINS_CHAIN="tests.ratelimit.ratelimit_test_plugin,ratelimit"``.
"""

from __future__ import annotations

from proxy import hookimpl
from proxy.context import Identity, RequestContext
from tests.support.event_recorder import EVENTS, events, on_event, startup

__all__ = ["EVENTS", "PLUGIN", "events", "on_event", "on_request", "startup"]

PLUGIN = "tests.ratelimit.ratelimit_test_plugin"


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Identify the caller from the test headers, when present."""
    key_id = ctx.request.headers.get("X-Test-Key-Id")
    if key_id:
        ctx.identity = Identity(key_id=key_id, owner="test",
                                role=ctx.request.headers.get("X-Test-Role", "user"))

